"""Does batching pay in the server? `flexrun serve` under a memory cgroup, one client against sixteen.

The server runs in a child memory cgroup (Tools/sweep.py's `Cgroup`, v1 or v2, created under this
process's own group and removed afterwards) whose limit is the cap, passed to the server as
--mem-limit too. The cap follows sweep.py: fraction x model file size + a runtime allowance
(40 MiB for SmolLM2), so 50% is sweep's and docs/BENCHMARKS.md's "50 %" (86.9 MiB for
SmolLM2-135M Q4_1). The page cache is dropped right before the server starts.

Rounds alternate two phases, every request greedy (temperature 0, seed 0) and streamed:
  A  one client, K requests one after another (different prompts);
  B  N concurrent clients (N = --parallel), one request each, all prompts different.
A phase's rate is its generated tokens (streamed delta chunks with content) over its wall time
(first request sent to last [DONE]; prefill and HTTP included). The report gives the medians and
B/A. Checks: every request 200 with [DONE]; streamed chunks = usage.completion_tokens = the delta
of /metrics' flexrun_generated_tokens_total; B really ran N sequences at once (sampled from
/metrics); the cgroup's peak <= cap; no OOM kill; the server still alive at the end; and, under a
cap, B/A >= --target.

Run as root (cgroups and drop_caches need it):
  python3 Tools/serve_bench.py [--flexrun PATH] [--rounds 3] [--json FILE] [--no-cap]
Exit status: 0 all checks pass, 1 a check failed (one line says which), 2 the run could not be made.
"""
import argparse, http.client, json, os, re, signal, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import sweep  # noqa: E402  (Cgroup, drop_caches, DEFAULT_MODEL)

# Short prompts that ask for long answers, so greedy sequences tend to run to max_tokens; the
# rate uses the tokens actually generated either way.
PROMPTS = [
    "Write a long story about a dragon who learns to cook.",
    "Explain in detail how a car engine works.",
    "Describe the water cycle step by step.",
    "List twenty fruits and describe each one.",
    "Write a detailed essay on the history of Rome.",
    "Explain how computers store numbers.",
    "Tell me a long fairy tale about a brave mouse.",
    "Describe a day in the life of a farmer.",
    "Explain photosynthesis to a ten year old.",
    "Write a long poem about the ocean.",
    "Give detailed instructions for baking bread.",
    "Describe the planets of the solar system.",
    "Explain how the internet works in detail.",
    "Write a story about a robot exploring Mars.",
    "Describe the causes of the First World War.",
    "Explain why exercise is good for health.",
]


class Fail(Exception):
    """The run could not be made (exit 2)."""


def mib(v):
    return "–" if v is None else f"{v / 2**20:.1f} MiB"


def default_flexrun():
    for p in (".build-product/release/flexrun", ".build/release/flexrun"):
        if os.path.exists(os.path.join(ROOT, p)):
            return os.path.join(ROOT, p)
    return os.path.join(ROOT, ".build/release/flexrun")


# ---------------------------------------------------------------- HTTP

def metrics(port, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", "/metrics")
        r = c.getresponse()
        text = r.read().decode()
        if r.status != 200:
            raise Fail(f"/metrics answered {r.status}")
    finally:
        c.close()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def wait_idle(port, timeout=30):
    """The metrics once no sequence runs and none waits (the counters are final then)."""
    end = time.monotonic() + timeout
    while True:
        m = metrics(port)
        if (m.get("flexrun_sequences_running", 0) == 0 and m.get("flexrun_requests_queued", 0) == 0) or time.monotonic() > end:
            return m
        time.sleep(0.05)


def stream_request(port, prompt, max_tokens, timeout):
    """One streamed chat completion. Returns the status, content chunks, usage, [DONE] seen, times."""
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                       "temperature": 0, "seed": 0, "stream": True, "stream_options": {"include_usage": True}})
    res = {"prompt": prompt, "status": None, "chunks": 0, "usage": None, "prompt_tokens": None, "done": False,
           "finish_reason": None, "error": None, "text": ""}
    res["t_start"] = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        res["status"] = r.status
        if r.status != 200:
            res["error"] = r.read()[:300].decode(errors="replace")
            return res
        parts = []
        while True:
            line = r.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                res["done"] = True
                break
            obj = json.loads(data)
            if obj.get("usage"):
                res["usage"] = obj["usage"].get("completion_tokens")
                res["prompt_tokens"] = obj["usage"].get("prompt_tokens")
            for ch in obj.get("choices", []):
                content = (ch.get("delta") or {}).get("content")
                if content:
                    if res["chunks"] == 0:
                        res["t_first"] = time.monotonic()
                    res["chunks"] += 1
                    parts.append(content)
                if ch.get("finish_reason"):
                    res["finish_reason"] = ch["finish_reason"]
        res["text"] = "".join(parts)
    except Exception as e:   # a refused or dropped connection counts as a failed request
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        res["t_end"] = time.monotonic()
        c.close()
    return res


# ---------------------------------------------------------------- phases

TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot(pid):
    """(busy CPU seconds of the whole machine, of the server, of this process): the difference is
    other people's load, which the numbers of a shared machine need beside them (flexrun's thread
    pool loses far more than its share when another process takes a core)."""
    f = open("/proc/stat").readline().split()[1:]
    v = [int(x) for x in f]
    busy = (sum(v[:8]) - v[3] - v[4]) / TICK          # user..steal minus idle and iowait
    try:
        st = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
        server = (int(st[11]) + int(st[12])) / TICK     # utime, stime
    except OSError:
        server = 0.0
    t = os.times()
    return busy, server, t.user + t.system


def run_phase(port, pid, label, rnd, prompts, concurrent, max_tokens, timeout):
    before = wait_idle(port)
    cpu0 = cpu_snapshot(pid)
    samples = {"running_max": 0, "queued_max": 0, "resident_max": 0}
    stop = threading.Event()

    def sampler():
        while not stop.is_set():
            try:
                m = metrics(port, timeout=5)
                samples["running_max"] = max(samples["running_max"], int(m.get("flexrun_sequences_running", 0)))
                samples["queued_max"] = max(samples["queued_max"], int(m.get("flexrun_requests_queued", 0)))
                samples["resident_max"] = max(samples["resident_max"], int(m.get("flexrun_resident_bytes", 0)))
            except Exception:
                pass
            stop.wait(0.25)

    poll = threading.Thread(target=sampler, daemon=True)
    poll.start()
    if concurrent:
        results = [None] * len(prompts)
        gate = threading.Barrier(len(prompts))

        def client(i):
            gate.wait()
            results[i] = stream_request(port, prompts[i], max_tokens, timeout)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        results = [stream_request(port, p, max_tokens, timeout) for p in prompts]
    stop.set()
    poll.join()
    cpu1 = cpu_snapshot(pid)
    after = wait_idle(port)
    wall = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
    tokens = sum(r["chunks"] for r in results)
    usage = sum(r["usage"] or 0 for r in results)
    gen = "flexrun_generated_tokens_total"
    delta = int(after.get(gen, 0) - before.get(gen, 0))
    ttft = [r["t_first"] - r["t_start"] for r in results if "t_first" in r]
    ok = [r["status"] == 200 and r["done"] and not r["error"] for r in results]
    finish = {}
    for r in results:
        finish[r["finish_reason"]] = finish.get(r["finish_reason"], 0) + 1
    busy, srv, me = (b - a for a, b in zip(cpu0, cpu1))
    return {"phase": label, "round": rnd, "requests": len(results), "concurrent": concurrent, "tokens": tokens,
            "server_cpu_cores": round(srv / wall, 2), "other_cpu_cores": round(max(0.0, busy - srv - me) / wall, 2),
            "usage_tokens": usage, "metrics_delta": delta, "wall_s": round(wall, 3), "tps": round(tokens / wall, 2) if wall > 0 else None,
            "ok_requests": sum(ok), "statuses": [r["status"] for r in results], "finish_reasons": finish,
            "ttft_median_s": round(statistics.median(ttft), 3) if ttft else None,
            "prompt_tokens_max": max((r["prompt_tokens"] or 0) for r in results),
            "running_max": samples["running_max"], "queued_max": samples["queued_max"], "resident_max": samples["resident_max"],
            "errors": [r["error"] for r in results if r["error"]][:3],
            "token_counts": [r["chunks"] for r in results]}


# ---------------------------------------------------------------- server

def start_server(a, cap, cg, errpath):
    cmd = [a.flexrun, "serve", "--model", a.model, "--port", "0", "--parallel", str(a.parallel), "--ctx", str(a.ctx),
           "--threads", str(a.threads)]
    if cap is not None:
        cmd += ["--mem-limit", str(cap)]
    err = open(errpath, "w")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=cg.join)
    err.close()
    end = time.monotonic() + a.start_timeout
    while time.monotonic() < end:
        text = open(errpath).read()
        m = re.search(r"flexrun: serving .* on http://127\.0\.0\.1:(\d+) (.*)", text)
        if m:
            return p, int(m.group(1)), m.group(0).strip(), cmd
        if p.poll() is not None:
            last = [l for l in text.splitlines() if l.strip()][-1:] or [f"exit {p.returncode}"]
            raise Fail(f"the server exited at start ({p.returncode}): {last[0]}")
        time.sleep(0.1)
    raise Fail(f"the server did not start listening within {a.start_timeout:g} s")


def stop_server(p):
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def v1_failcnt(cg):
    if cg.version != 1:
        return None
    v = cg._read("memory.failcnt").strip()
    return int(v) if v.isdigit() else None


def info_in_memory(a):
    """`flexrun info`'s "in memory" total at --ctx (one sequence), for the report."""
    try:
        out = subprocess.run([a.flexrun, "info", a.model, "--ctx", str(a.ctx)], capture_output=True, text=True, timeout=60)
        m = re.search(r"in memory\s+(.*)", out.stdout + out.stderr)
        return m.group(1).strip() if m else None
    except Exception:
        return None


def plan_check(a, cap):
    """`flexrun plan` for the served shape: refuses (with the engine's own reason) if it cannot fit."""
    cmd = [a.flexrun, "plan", "--model", a.model, "--parallel", str(a.parallel), "--ctx", str(a.ctx),
           "--threads", str(a.threads), "--mem-limit", str(cap if cap is not None else 2**40)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    if out.returncode != 0:
        raise Fail(next((l for l in text.splitlines() if "error" in l), text.strip()[:300]))
    m = re.search(r"streamed per token\s+([\d.]+ \w+)", text)
    streamed = m.group(1) if m else ("0 B" if "every weight is resident" in text else None)
    m = re.search(r"total\s+([\d.]+ \w+)", text)
    return {"streamed_per_token": streamed, "planned_total": m.group(1) if m else None}


# ---------------------------------------------------------------- report

def report(a, res):
    L = []
    cfg = res["config"]
    L.append(f"flexrun serve: {os.path.basename(a.model)}, --parallel {a.parallel} --ctx {a.ctx} --threads {a.threads}, "
             f"greedy, max_tokens {a.tokens}, {a.rounds} rounds A/B alternating")
    if cfg["cap"] is None:
        L.append("cap: none (--no-cap; the server still runs in a child cgroup, without a limit, for its peak)")
    else:
        L.append(f"cap: {mib(cfg['cap'])} = {a.fraction:g} x file size ({mib(cfg['file_size'])}) + {a.allowance_mib:g} MiB "
                 f"(sweep.py's rule), cgroup v{cfg['cgroup_version']} limit and --mem-limit; plan streams "
                 f"{cfg['plan']['streamed_per_token']} per step")
    L.append(f"flexrun info --ctx {a.ctx}, one sequence, in memory: {cfg['info_in_memory']}")
    L.append("")
    L.append("| round | phase | requests | tokens (chunks / usage / metrics Δ) | wall s | tok/s | TTFT median s | max running | 200+[DONE] "
             "| server CPU (cores) | other load (cores) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in res["phases"]:
        name = f"A: 1 client x {p['requests']} seq." if not p["concurrent"] else f"B: {p['requests']} concurrent"
        L.append(f"| {p['round']} | {name} | {p['requests']} | {p['tokens']} / {p['usage_tokens']} / {p['metrics_delta']} | "
                 f"{p['wall_s']:.2f} | {p['tps']:.1f} | {p['ttft_median_s']} | {p['running_max']} | {p['ok_requests']}/{p['requests']} | "
                 f"{p['server_cpu_cores']:.2f} | {p['other_cpu_cores']:.2f} |")
    s = res["summary"]
    L.append("")
    L.append(f"single-client tok/s median {s['a_tps_median']:.1f}  (rounds: {', '.join(f'{x:.1f}' for x in s['a_tps'])})")
    L.append(f"{a.parallel}-client tok/s median {s['b_tps_median']:.1f}  (rounds: {', '.join(f'{x:.1f}' for x in s['b_tps'])})")
    tgt = f"target >= {a.target:g}x: {'met' if s['ratio'] >= a.target else 'NOT met'}" + ("" if cfg["cap"] is not None else " (not enforced without a cap)")
    L.append(f"ratio B/A {s['ratio']:.2f}x  (per round: {', '.join(f'{x:.2f}' for x in s['round_ratios'])}; {tgt})")
    c = res["checks"]
    other = max(p["other_cpu_cores"] for p in res["phases"])
    L.append(f"other processes' CPU during the phases: up to {other:.2f} of {os.cpu_count()} cores"
             + (" -- a shared machine; the rates are depressed (flexrun's pool stalls when another process takes a core)"
                if other > 0.25 else " (quiet)"))
    L.append(f"cgroup peak {mib(c['peak'])} vs cap {mib(cfg['cap'])}: {'under' if c['peak_under_cap'] else 'OVER' if cfg['cap'] else 'n/a'}; "
             f"OOM kills {c['oom_kills']}" + (f"; v1 failcnt {c['failcnt']} (limit hits, reclaim; not OOM)" if c['failcnt'] is not None else "")
             + f"; server max resident (metrics) {mib(c['resident_max'])}; server alive at end: {'yes' if c['server_alive'] else 'NO'}")
    L.append(f"metrics agreement: flexrun_generated_tokens_total delta = streamed chunks = usage in every phase: "
             f"{'yes' if c['metrics_agree'] else 'NO'} (total {c['tokens_total']} chunks, {c['usage_total']} usage, {c['metrics_total']} metrics)")
    L.append(f"all requests 200 with [DONE]: {'yes' if c['all_ok'] else 'NO'}; B ran {a.parallel} sequences at once: "
             f"{'yes' if c['b_batched'] else 'NO'} (max running seen {c['b_running_max']}); finish reasons {c['finish_reasons']}; "
             f"largest prompt {c['prompt_tokens_max']} tokens + {a.tokens} <= ctx {a.ctx}: {'yes' if c['prompt_tokens_max'] + a.tokens <= a.ctx else 'no'}")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description="flexrun serve: aggregate tok/s of one client against --parallel concurrent clients under a cgroup cap")
    ap.add_argument("--flexrun", default=default_flexrun())
    ap.add_argument("--model", default=sweep.DEFAULT_MODEL)
    ap.add_argument("--fraction", type=float, default=0.5, help="cap = fraction x model file size + allowance (sweep.py's rule)")
    ap.add_argument("--allowance-mib", type=float, default=40, help="runtime allowance added to the cap (as sweep.py)")
    ap.add_argument("--no-cap", action="store_true", help="no cgroup limit and no --mem-limit (the comparison run)")
    ap.add_argument("--parallel", type=int, default=16, help="server --parallel and the number of concurrent clients in B")
    ap.add_argument("--ctx", type=int, default=128, help="server --ctx, per sequence (16 x 512 needs 208 MiB, more than the 50%% cap; "
                    "16 x 128 fits it: prompt + 64 tokens stays under 128)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens of every request")
    ap.add_argument("--single", type=int, default=3, help="requests in sequence in phase A")
    ap.add_argument("--rounds", type=int, default=3, help="A,B rounds (alternating)")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured requests (8 tokens) before the first round")
    ap.add_argument("--target", type=float, default=4.0, help="B/A ratio to reach under a cap (exit 1 below it)")
    ap.add_argument("--timeout", type=float, default=300, help="socket timeout per request, seconds")
    ap.add_argument("--start-timeout", type=float, default=120)
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the server is stopped and the cgroup removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("serve_bench: error: run as root (cgroups and drop_caches need it)", file=sys.stderr)
        return 2
    if a.parallel > len(PROMPTS):
        print(f"serve_bench: error: --parallel goes up to {len(PROMPTS)} (one prompt per client)", file=sys.stderr)
        return 2
    for path in (a.flexrun, a.model):
        if not os.path.exists(path):
            print(f"serve_bench: error: {path} does not exist", file=sys.stderr)
            return 2

    size = os.path.getsize(a.model)
    cap = None if a.no_cap else int(a.fraction * size + a.allowance_mib * 2**20)
    server, cg, errfd = None, None, None
    errpath = None
    t_begin = time.monotonic()
    try:
        plan = plan_check(a, cap)
        cfg = {"model": a.model, "file_size": size, "cap": cap, "fraction": None if a.no_cap else a.fraction,
               "allowance_mib": a.allowance_mib, "parallel": a.parallel, "ctx": a.ctx, "threads": a.threads, "max_tokens": a.tokens,
               "single_requests": a.single, "rounds": a.rounds, "info_in_memory": info_in_memory(a), "plan": plan,
               "bench_command": " ".join([sys.executable] + sys.argv)}
        cg = sweep.Cgroup(f"flexrun-serve-bench-{os.getpid()}")
        cfg["cgroup_version"] = cg.version
        if cap is not None:
            cg.set_limit(cap)
        cfg["caches_dropped"] = sweep.drop_caches()
        errfd, errpath = tempfile.mkstemp(prefix="serve_bench-", suffix=".log")
        os.close(errfd)
        server, port, banner, cmd = start_server(a, cap, cg, errpath)
        cfg["server_command"] = " ".join(cmd)
        cfg["banner"] = banner
        print(f"serve_bench: {banner}", file=sys.stderr)
        for i in range(a.warmup):
            w = stream_request(port, PROMPTS[i % len(PROMPTS)], 8, a.timeout)
            if w["status"] != 200 or not w["done"]:
                raise Fail(f"the warm-up request failed: status {w['status']}, {w['error']}")
        phases = []
        for rnd in range(1, a.rounds + 1):
            single = [PROMPTS[((rnd - 1) * a.single + k) % len(PROMPTS)] for k in range(a.single)]
            for label, prompts, conc in (("A", single, False), ("B", PROMPTS[:a.parallel], True)):
                p = run_phase(port, server.pid, label, rnd, prompts, conc, a.tokens, a.timeout)
                phases.append(p)
                print(f"serve_bench: round {rnd} {label}: {p['tokens']} tokens in {p['wall_s']:.2f} s = {p['tps']:.1f} tok/s "
                      f"({p['ok_requests']}/{p['requests']} ok, metrics delta {p['metrics_delta']}, max running {p['running_max']})",
                      file=sys.stderr)
                if server.poll() is not None:
                    raise Fail(f"the server died during round {rnd} {label} (exit {server.returncode}; OOM kills {cg.oom_kills()})")
        alive = server.poll() is None
        stop_server(server)
        a_tps = [p["tps"] for p in phases if p["phase"] == "A"]
        b_tps = [p["tps"] for p in phases if p["phase"] == "B"]
        summary = {"a_tps": a_tps, "b_tps": b_tps, "a_tps_median": statistics.median(a_tps), "b_tps_median": statistics.median(b_tps),
                   "round_ratios": [round(b / x, 3) for x, b in zip(a_tps, b_tps)]}
        summary["ratio"] = round(summary["b_tps_median"] / summary["a_tps_median"], 3)
        bs = [p for p in phases if p["phase"] == "B"]
        peak = cg.peak()
        finish = {}
        for p in phases:
            for k, v in p["finish_reasons"].items():
                finish[str(k)] = finish.get(str(k), 0) + v
        checks = {
            "all_ok": all(p["ok_requests"] == p["requests"] for p in phases),
            "metrics_agree": all(p["tokens"] == p["usage_tokens"] == p["metrics_delta"] for p in phases),
            "tokens_total": sum(p["tokens"] for p in phases), "usage_total": sum(p["usage_tokens"] for p in phases),
            "metrics_total": sum(p["metrics_delta"] for p in phases),
            "b_running_max": max(p["running_max"] for p in bs), "b_batched": all(p["running_max"] == a.parallel for p in bs),
            "peak": peak, "peak_under_cap": (peak is not None and peak <= cap) if cap is not None else None,
            "oom_kills": cg.oom_kills(), "failcnt": v1_failcnt(cg), "server_alive": alive,
            "resident_max": max(p["resident_max"] for p in phases), "finish_reasons": finish,
            "prompt_tokens_max": max(p["prompt_tokens_max"] for p in phases),
        }
        res = {"config": cfg, "phases": phases, "summary": summary, "checks": checks,
               "elapsed_s": round(time.monotonic() - t_begin, 1)}
        failures = []
        if not checks["all_ok"]:
            bad = next(p for p in phases if p["ok_requests"] != p["requests"])
            failures.append(f"round {bad['round']} {bad['phase']}: {bad['ok_requests']}/{bad['requests']} requests got 200 and [DONE] "
                            f"({bad['errors'][:1]})")
        if not checks["metrics_agree"]:
            failures.append(f"token counts disagree (chunks {checks['tokens_total']}, usage {checks['usage_total']}, "
                            f"metrics {checks['metrics_total']})")
        if not checks["b_batched"]:
            failures.append(f"B never ran {a.parallel} sequences at once (max {checks['b_running_max']})")
        if cap is not None and not checks["peak_under_cap"]:
            failures.append(f"cgroup peak {mib(peak)} over the cap {mib(cap)}")
        if checks["oom_kills"]:
            failures.append(f"{checks['oom_kills']} OOM kills in the cgroup")
        if not alive:
            failures.append("the server was not alive at the end")
        if cap is not None and summary["ratio"] < a.target:
            failures.append(f"B/A {summary['ratio']:.2f}x is below the {a.target:g}x target")
        res["failures"] = failures
        print(report(a, res))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        if failures:
            print("serve_bench: FAIL: " + "; ".join(failures), file=sys.stderr)
            return 1
        print(f"serve_bench: PASS ({res['elapsed_s']:g} s)", file=sys.stderr)
        return 0
    except Fail as e:
        tail = ""
        if errpath and os.path.exists(errpath):
            lines = [l for l in open(errpath).read().splitlines() if l.strip()]
            tail = f" [server stderr: {lines[-1]}]" if lines and str(e).find(lines[-1]) < 0 else ""
        print(f"serve_bench: error: {e}{tail}", file=sys.stderr)
        return 2
    finally:
        stop_server(server)
        if cg is not None:
            cg.remove()
        if errpath and os.path.exists(errpath):
            os.remove(errpath)


if __name__ == "__main__":
    sys.exit(main())
