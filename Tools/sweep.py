"""Throughput under memory caps: flexrun (and optionally llama.cpp) in child cgroups.

For each cap (fraction x model file size + a runtime allowance), this tool
- creates a child memory cgroup under its own (v1 or v2), sets the limit (and the swap limit
  where there is one), and removes the group afterwards;
- drops the page cache right before the run (DESIGN.md section 4: in cgroup v1, pages already
  cached by the parent are not charged to a child, so an mmap run would look free);
- runs the engine inside the group, greedy, and records decode tok/s, prefill time, the group's
  peak usage, OOM kills, bytes read from disk (the engine's own count, and the cgroup's
  blkio/io statistics where readable), the exit status, and whether the generated ids equal
  the uncapped run's;
- writes a markdown table and an SVG plot of tok/s against the cap.

Run as root (cgroups and drop_caches need it):
  python3 Tools/sweep.py --flexrun .build/release/flexrun [--peer-python VENV/bin/python] --out docs/sweep
"""
import argparse, json, os, re, statistics, subprocess, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(os.environ.get("FLEXRUN_MODELS", os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "flexrun", "models")), "SmolLM2-135M-Instruct.Q4_1.gguf")


class Cgroup:
    """A child memory cgroup of this process's own group, v1 or v2."""

    def __init__(self, name, read_bps=None, device=None):
        lines = open("/proc/self/cgroup").read().splitlines()
        mounts = [l.split() for l in open("/proc/self/mounts").read().splitlines()]
        v1 = next((m[1] for m in mounts if m[2] == "cgroup" and "memory" in m[3].split(",")), None)
        v2 = next((m[1] for m in mounts if m[2] == "cgroup2"), None)
        if v1:
            path = next(l.split(":", 2)[2] for l in lines if "memory" in l.split(":", 2)[1].split(","))
            base = v1 + path if os.path.exists(v1 + path + "/memory.limit_in_bytes") else v1
            self.version = 1
        elif v2:
            path = next(l.split(":", 2)[2] for l in lines if l.startswith("0::"))
            base = v2 + path if os.path.isdir(v2 + path) else v2
            self.version = 2
            # A v2 child can only get a memory controller if the parent delegates it.
            try:
                with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
                    f.write("+memory")
            except OSError:
                pass
        else:
            raise SystemExit("sweep: no memory cgroup controller is mounted")
        self.dir = os.path.join(base, name)
        os.makedirs(self.dir, exist_ok=True)
        # A read-bandwidth throttle, to stand in for slow storage (an SD card, eMMC): v1's blkio
        # controller in a sibling child group, or v2's io.max in the same group.
        self.blkio = None
        if read_bps:
            if self.version == 1:
                b1 = next((m[1] for m in mounts if m[2] == "cgroup" and "blkio" in m[3].split(",")), None)
                if not b1:
                    raise SystemExit("sweep: --read-bps needs the blkio cgroup controller")
                bpath = next(l.split(":", 2)[2] for l in lines if "blkio" in l.split(":", 2)[1].split(","))
                self.blkio = os.path.join(b1 + bpath if bpath != "/" else b1, name)
                os.makedirs(self.blkio, exist_ok=True)
                with open(os.path.join(self.blkio, "blkio.throttle.read_bps_device"), "w") as f:
                    f.write(f"{device} {read_bps}")
            else:
                try:
                    with open(os.path.join(base, "cgroup.subtree_control"), "w") as f:
                        f.write("+io")
                except OSError:
                    pass
                self._write("io.max", f"{device} rbps={read_bps}")

    def _write(self, file, value):
        with open(os.path.join(self.dir, file), "w") as f:
            f.write(str(value))

    def _read(self, file):
        try:
            return open(os.path.join(self.dir, file)).read()
        except OSError:
            return ""

    def set_limit(self, limit):
        if self.version == 1:
            self._write("memory.limit_in_bytes", limit)
            if os.path.exists(os.path.join(self.dir, "memory.memsw.limit_in_bytes")):
                self._write("memory.memsw.limit_in_bytes", limit)
            if os.path.exists(os.path.join(self.dir, "memory.max_usage_in_bytes")):
                self._write("memory.max_usage_in_bytes", 0)
        else:
            self._write("memory.max", limit)
            if os.path.exists(os.path.join(self.dir, "memory.swap.max")):
                self._write("memory.swap.max", 0)

    def join(self):
        """Called in the child between fork and exec."""
        self._write("cgroup.procs", os.getpid())
        if self.blkio:
            with open(os.path.join(self.blkio, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def peak(self):
        f = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        v = self._read(f).strip()
        return int(v) if v.isdigit() else None

    def oom_kills(self):
        text = self._read("memory.oom_control" if self.version == 1 else "memory.events")
        m = re.search(r"oom_kill (\d+)", text)
        return int(m.group(1)) if m else 0

    def remove(self):
        for d in [self.dir] + ([self.blkio] if self.blkio else []):
            for _ in range(50):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.1)


def parse_rate(text, tool):
    """Bytes per second from --read-bps text such as 100M (K, M, G: binary multiples)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]?)", text.strip().upper())
    if not m:
        raise SystemExit(f"{tool}: --read-bps must look like 100M")
    return int(float(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2)])


def whole_disk(path):
    """MAJ:MIN of the disk holding `path` (the throttle applies to whole disks, not partitions)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    sys_dir = os.path.realpath(f"/sys/dev/block/{dev}")
    if os.path.exists(os.path.join(sys_dir, "partition")):
        dev = open(os.path.join(os.path.dirname(sys_dir), "dev")).read().strip()
    return dev


def drop_caches():
    subprocess.run(["sync"])
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("1")
        return True
    except OSError as e:
        print(f"sweep: warning: cannot drop caches ({e}); numbers will flatter mmap", file=sys.stderr)
        return False


def run_in_cgroup(cmd, limit, name, timeout, read_bps=None, device=None):
    cg = Cgroup(name, read_bps, device)
    try:
        if limit is not None:
            cg.set_limit(limit)
        drop_caches()
        t0 = time.monotonic()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=cg.join, timeout=timeout)
            rc, out, err = p.returncode, p.stdout, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, out, err = "timeout", e.stdout or "", e.stderr or ""
            out = out.decode() if isinstance(out, bytes) else out
            err = err.decode() if isinstance(err, bytes) else err
        wall = time.monotonic() - t0
        return {"exit": rc, "stdout": out, "stderr": err, "wall": wall, "peak": cg.peak(), "oom_kills": cg.oom_kills()}
    finally:
        cg.remove()


def flexrun_cmd(a, prompt_file, limit, model=None, speculate=None):
    cmd = [a.flexrun, "--model", model or a.model, "--threads", str(a.threads), "-n", str(a.tokens), "--temp", "0",
           "--stats", "--print-ids", prompt_file]
    if speculate:
        cmd[1:1] = ["--speculate", speculate]
    if limit is not None:
        cmd[1:1] = ["--mem-limit", str(limit)]
    return cmd


BATCH_PROMPTS = ["The capital of France is", "Write a haiku about disks.", "1, 2, 3, 4,", "Once upon a time, in a small village,",
                 "def fibonacci(n):", "The three primary colors are", "Q: What is the boiling point of water? A:", "Les chats sont"]


def batch_context(prompts, tokens):
    """flexrun's own per-sequence context for the job (prompt bytes + tokens + 2, rounded up to 64),
    given to the peer too so both hold the same KV cache."""
    return (max(len(p.encode()) for p in prompts) + tokens + 2 + 63) // 64 * 64


def flexrun_batch_cmd(a, prompts_file, batch, limit):
    cmd = [a.flexrun, "--model", a.model, "--threads", str(a.threads), "-n", str(a.tokens), "--temp", "0", "--ignore-eos",
           "--parallel", str(batch), "--stats", "--print-ids", prompts_file]
    if limit is not None:
        cmd[1:1] = ["--mem-limit", str(limit)]
    return cmd


def parse_flexrun_batch(r):
    out = {"decode_tps": None, "prefill_s": None, "ids": None, "read": None, "read_per_token": None, "planned_per_token": None,
           "stall_s": None}
    m = re.search(r"aggregate: ([\d.]+) tok/s decoding \(after the first token, at ([\d.]+) s\)", r["stderr"])
    if m:
        out["decode_tps"], out["prefill_s"] = float(m.group(1)), float(m.group(2))
    try:
        seqs = sorted((json.loads(l) for l in r["stdout"].splitlines() if l.strip()), key=lambda o: o["id"])
        out["ids"] = [[str(i) for i in o["ids"]] for o in seqs] or None
    except Exception:
        pass
    m = re.search(r"(\d[\d.]* \w+) streamed per pass", r["stderr"])
    out["planned_per_token"] = m.group(1) if m else ("0 B" if "all weights resident" in r["stderr"] else None)
    m = re.search(r"disk: ([\d.]+ \w+) read, prefetch stalls ([\d.]+) s", r["stderr"])
    if m:
        out["read"], out["stall_s"] = m.group(1), float(m.group(2))
    out["error"] = next((l for l in r["stderr"].splitlines() if "error:" in l), None)
    return out


def parse_peer_batch(r):
    try:
        d = json.loads(r["stdout"].strip().splitlines()[-1])
        return {"decode_tps": d["aggregate_decode_tps"], "prefill_s": d["prompt_s"], "ids": [[str(i) for i in s] for s in d["ids"]]}
    except Exception:
        return {"decode_tps": None, "prefill_s": None, "ids": None}


def parse_flexrun(r):
    e = r["stderr"]
    out = {}
    m = re.search(r"decode: (\d+) tokens in [\d.]+ s \(([\d.]+) tok/s\)", e)
    out["decode_tps"] = float(m.group(2)) if m else None
    m = re.search(r"prompt: (\d+) tokens in ([\d.]+) s", e)
    out["prefill_s"] = float(m.group(2)) if m else None
    m = re.search(r"ids: ([\d ]+)", e)
    out["ids"] = m.group(1).split() if m else None
    m = re.search(r"disk: ([\d.]+ \w+) read, ([\d.]+ \w+) per decoded token", e)
    out["read"], out["read_per_token"] = (m.group(1), m.group(2)) if m else (None, None)
    m = re.search(r"(\d[\d.]* \w+) streamed per pass", e)
    out["planned_per_token"] = m.group(1) if m else ("0 B" if "all weights resident" in e else None)
    m = re.search(r"prefetch stalls ([\d.]+) s", e)
    out["stall_s"] = float(m.group(1)) if m else None
    m = re.search(r"speculation \(\w+\): (\d+) drafted, (\d+) accepted \((\d+)%\), (\d+) passes, ([\d.]+) tokens per pass", e)
    if m:
        out["drafted"], out["accepted"], out["passes"], out["tokens_per_pass"] = int(m.group(1)), int(m.group(2)), int(m.group(4)), float(m.group(5))
    out["error"] = next((l for l in e.splitlines() if "error:" in l), None)
    return out


PEER = r"""
import json, sys, time, llama_cpp
from llama_cpp import Llama
model, threads, n, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=128, n_batch=128,
            use_mmap=True, use_mlock=False, verbose=False, seed=0)
ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)   # BOS as the model adds it, like flexrun
llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
t0 = time.monotonic(); llm.eval(ids); t1 = time.monotonic()
out = []
for _ in range(n):
    t = llm.sample(temp=0.0); out.append(t); llm.eval([t])
    print(f"token {time.monotonic():.4f}", file=sys.stderr, flush=True)
perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
print(json.dumps({"decode_tps": perf.n_eval / (perf.t_eval_ms / 1000) if perf.t_eval_ms > 0 else 0,
                  "prefill_s": t1 - t0, "ids": out}))
"""


def parse_peer(r):
    try:
        d = json.loads(r["stdout"].strip().splitlines()[-1])
        return {"decode_tps": d["decode_tps"], "prefill_s": d["prefill_s"], "ids": [str(i) for i in d["ids"]]}
    except Exception:
        # Timed out (or killed): the rate over the tokens it did produce, from their timestamps.
        ts = [float(x) for x in re.findall(r"token ([\d.]+)", r["stderr"] or "")]
        tps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) >= 3 else None
        return {"decode_tps": tps, "prefill_s": None, "ids": None, "partial_tokens": len(ts)}


def peer_overhead(python, timeout):
    """Resident size of the peer's Python interpreter with llama_cpp imported and no model loaded
    (VmRSS: its anonymous memory and mapped code, ggml's own libraries included). The llama.cpp
    binary does not pay for the interpreter, so the peer's cap is raised by this much: generous
    to the peer, since ggml's code would be resident in the binary too. (The cgroup's peak is not
    used: it also counts every file the import read into the page cache, which is reclaimable.)"""
    out = subprocess.run([python, "-c", "import llama_cpp, llama_cpp.llama, re; "
                          "print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"],
                         capture_output=True, text=True, timeout=timeout)
    return int(out.stdout.strip()) * 1024


def fmt_bytes(v):
    return "–" if v is None else f"{v / 2**20:.1f} MiB"


def svg_plot(rows, path, title):
    """A dependency-free line plot: decode tok/s (log scale) against the cap fraction."""
    import math
    # The legend sits right of the plot: room for its longest label.
    longest = max((len(r["engine"]) for r in rows), default=8)
    W, H, L, R, T, B = 640 + max(0, 7 * longest - 110), 400, 70, max(150, 7 * longest + 40), 40, 50
    xs = sorted({r["fraction"] for r in rows})
    ys = [r["decode_tps"] for r in rows if r.get("decode_tps")]
    if not ys:
        return
    lo, hi = 10 ** math.floor(math.log10(min(ys))), 10 ** math.ceil(math.log10(max(ys)))
    def X(f): return L + (W - L - R) * (f - min(xs)) / max(1e-9, max(xs) - min(xs))
    def Y(v): return T + (H - T - B) * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    d = lo
    while d <= hi:
        for m in (1, 2, 5):
            v = d * m
            if lo <= v <= hi:
                s.append(f'<line x1="{L}" x2="{W - R}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/>')
                s.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        d *= 10
    for f in xs:
        s.append(f'<line x1="{X(f):.1f}" x2="{X(f):.1f}" y1="{T}" y2="{H - B}" stroke="#eee"/>')
        s.append(f'<text x="{X(f):.1f}" y="{H - B + 16}" text-anchor="middle">{int(f * 100)}%</text>')
    s.append(f'<text x="{(L + W - R) / 2}" y="{H - 10}" text-anchor="middle">cap (fraction of the model file + allowance)</text>')
    s.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" text-anchor="middle">decode tok/s (log)</text>')
    colors = {"flexrun": "#1f77b4", "flexrun packed": "#2ca02c", "flexrun speculate": "#9467bd", "llama.cpp mmap": "#d62728"}
    palette = {"flexrun": ["#08306b", "#2171b5", "#6baed6", "#9ecae1"], "llama.cpp mmap": ["#67000d", "#cb181d", "#fb6a4a", "#fcbba1"]}
    batched = sorted({r["engine"] for r in rows if " ×" in r["engine"]}, key=lambda e: (e.split(" ×")[0], int(e.split(" ×")[1])))
    if batched:
        colors = {}
        for base in ("flexrun", "llama.cpp mmap"):
            for k, e in enumerate(x for x in batched if x.split(" ×")[0] == base):
                colors[e] = palette[base][k % 4]
    for i, (engine, color) in enumerate(colors.items()):
        pts = sorted((r["fraction"], r["decode_tps"]) for r in rows if r["engine"] == engine and r.get("decode_tps"))
        if not pts:
            continue
        s.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            color, " ".join(f"{X(f):.1f},{Y(v):.1f}" for f, v in pts)))
        for f, v in pts:
            s.append(f'<circle cx="{X(f):.1f}" cy="{Y(v):.1f}" r="3" fill="{color}"/>')
        s.append(f'<line x1="{W - R + 10}" x2="{W - R + 30}" y1="{T + 20 * i + 10}" y2="{T + 20 * i + 10}" stroke="{color}" stroke-width="2"/>')
        s.append(f'<text x="{W - R + 36}" y="{T + 20 * i + 14}">{engine}</text>')
    s.append("</svg>")
    open(path, "w").write("\n".join(s))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexrun", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--fractions", default="1,0.75,0.5,0.35,0.25")
    ap.add_argument("--allowance-mib", type=float, default=40, help="runtime allowance added to each cap (DESIGN.md: 40 for SmolLM2)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", default="Explain what artificial intelligence is.")
    ap.add_argument("--batch", help="batch sizes, e.g. 1,4,8: every engine decodes that many sequences at once (flexrun "
                    "--parallel, llama.cpp through its batch API), -n tokens each with EOS ignored")
    ap.add_argument("--packed", help="a block file of the model (flexrun pack): also run it under each cap, "
                    "alternating with the GGUF, to compare packed against raw side by side")
    ap.add_argument("--speculate", choices=["auto", "lookup"], help="also run flexrun with --speculate MODE under each cap "
                    "(row `flexrun speculate`, its ratio against the plain flexrun row of the same repeats)")
    ap.add_argument("--peer-python", help="a python with llama_cpp installed: also run llama.cpp (mmap) under each cap")
    ap.add_argument("--read-bps", help="throttle disk reads to this rate (e.g. 100M), standing in for slow storage")
    ap.add_argument("--repeat", type=int, default=3, help="runs per engine and cap; the table shows the median")
    ap.add_argument("--timeout", type=float, default=240, help="seconds per run; a peer that times out is rated on the tokens it produced")
    ap.add_argument("--out", default="docs/sweep", help="directory for sweep.md, sweep.svg, sweep.json")
    a = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the `finally` clauses remove the child cgroups.
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        raise SystemExit("sweep: run as root (cgroups and drop_caches need it)")
    os.makedirs(a.out, exist_ok=True)
    prompt_file = os.path.join(a.out, ".prompt.txt")
    open(prompt_file, "w").write(a.prompt)
    size = os.path.getsize(a.model)
    fractions = [float(f) for f in a.fractions.split(",")]

    read_bps = None
    device = None
    if a.read_bps:
        read_bps = parse_rate(a.read_bps, "sweep")
        device = whole_disk(a.model)
        print(f"sweep: disk reads throttled to {a.read_bps}/s on {device}", file=sys.stderr)
    throttle = dict(read_bps=read_bps, device=device)

    batches = [int(b) for b in a.batch.split(",")] if a.batch else [None]
    if a.batch and a.packed:
        raise SystemExit("sweep: --batch and --packed do not go together")
    batch_files = {}
    for b in batches:
        if b is None:
            continue
        if not 1 <= b <= len(BATCH_PROMPTS):
            raise SystemExit(f"sweep: batch sizes go from 1 to {len(BATCH_PROMPTS)}")
        batch_files[b] = os.path.join(a.out, f".prompts-{b}.txt")
        open(batch_files[b], "w").write("\n".join(BATCH_PROMPTS[:b]) + "\n")
    print("sweep: uncapped reference run", file=sys.stderr)
    refs = {}
    for b in batches:
        cmd, parse = (flexrun_cmd(a, prompt_file, None), parse_flexrun) if b is None else (flexrun_batch_cmd(a, batch_files[b], b, None), parse_flexrun_batch)
        refs[b] = parse(run_in_cgroup(cmd, None, f"flexrun-sweep-{os.getpid()}-ref", a.timeout, **throttle))
    ref = refs[batches[0]]
    overhead = peer_overhead(a.peer_python, a.timeout) if a.peer_python else 0
    if a.peer_python:
        print(f"sweep: the peer's Python interpreter takes {fmt_bytes(overhead)}; its caps are raised by that", file=sys.stderr)
    rows = []
    for i, f in enumerate(fractions):
        cap = int(f * size + a.allowance_mib * 2**20)
        engines = []   # (label, batch, command, parser)
        for b in batches:
            if b is None:
                engines.append(("flexrun", None, flexrun_cmd(a, prompt_file, cap), parse_flexrun))
                if a.packed:
                    engines.append(("flexrun packed", None, flexrun_cmd(a, prompt_file, cap, a.packed), parse_flexrun))
                if a.speculate:
                    engines.append(("flexrun speculate", None, flexrun_cmd(a, prompt_file, cap, speculate=a.speculate), parse_flexrun))
                if a.peer_python:
                    peer_script = os.path.join(a.out, ".peer.py")
                    open(peer_script, "w").write(PEER)
                    engines.append(("llama.cpp mmap", None, [a.peer_python, peer_script, a.model, str(a.threads), str(a.tokens), a.prompt],
                                    parse_peer))
            else:
                engines.append((f"flexrun ×{b}", b, flexrun_batch_cmd(a, batch_files[b], b, cap), parse_flexrun_batch))
                if a.peer_python:
                    ctx = batch_context(BATCH_PROMPTS[:b], a.tokens)
                    engines.append((f"llama.cpp mmap ×{b}", b, [a.peer_python, os.path.join(HERE, "batch_peer.py"), "--model", a.model,
                                    "--prompts", batch_files[b], "--parallel", str(b), "-n", str(a.tokens), "--threads", str(a.threads),
                                    "--ctx", str(ctx)], parse_peer_batch))
        runs = {engine: [] for engine, _, _, _ in engines}
        for rep in range(a.repeat):
            # Alternate the engines within each repeat, so both see the same disk and load.
            for engine, b, cmd, parse in engines:
                print(f"sweep: {engine} at {int(f * 100)}% (cap {fmt_bytes(cap)}), run {rep + 1}/{a.repeat}", file=sys.stderr)
                engine_cap = cap + overhead if engine.startswith("llama") else cap
                r = run_in_cgroup(cmd, engine_cap, f"flexrun-sweep-{os.getpid()}-{i}", a.timeout, **throttle)
                p = parse(r)
                run = {"engine": engine, "batch": b, "fraction": f, "cap": engine_cap, "exit": r["exit"], "peak": r["peak"],
                       "oom_kills": r["oom_kills"], "wall_s": round(r["wall"], 2), **{k: v for k, v in p.items() if k != "ids"}}
                run["same_ids"] = (p["ids"] == refs[b]["ids"]) if engine.startswith("flexrun") and p.get("ids") else None
                run["under_cap"] = r["peak"] is not None and r["peak"] <= engine_cap
                runs[engine].append(run)
                print("sweep:   " + json.dumps({k: run[k] for k in ("decode_tps", "exit", "peak", "oom_kills", "same_ids")}), file=sys.stderr)
        for engine, rs in runs.items():
            # The row is the run with the median decode rate; the worst case of the other figures.
            rated = sorted((x for x in rs if x.get("decode_tps")), key=lambda x: x["decode_tps"])
            row = dict(rated[len(rated) // 2] if rated else rs[0])
            row["decode_runs"] = [x.get("decode_tps") for x in rs]
            row["peak"] = max((x["peak"] for x in rs if x["peak"] is not None), default=None)
            row["under_cap"] = all(x["under_cap"] for x in rs)
            row["oom_kills"] = sum(x["oom_kills"] for x in rs)
            row["exit"] = next((x["exit"] for x in rs if x["exit"] != 0), 0)
            if engine.startswith("flexrun"):
                row["same_ids"] = all(x["same_ids"] for x in rs)
            rows.append(row)

    json.dump({"model": a.model, "size": size, "reference_decode_tps": {str(b): refs[b]["decode_tps"] for b in batches},
               "peer_overhead": overhead, "rows": rows},
              open(os.path.join(a.out, "sweep.json"), "w"), indent=1)
    name = os.path.basename(a.model)
    lines = [f"Model `{name}` ({size / 1e6:.1f} MB), {a.threads} threads, {a.tokens} greedy tokens, "
             f"cap = fraction × file size + {a.allowance_mib:g} MiB, page cache dropped before each run"
             + (f", disk reads throttled to {a.read_bps}/s (cgroup blkio/io.max, standing in for slow storage). " if a.read_bps else ". ")
             + f"Each figure is the median of {a.repeat} runs, the engines alternating; peak, OOM kills, exit and ids "
             f"cover all runs. Uncapped flexrun: "
             + ", ".join(f"{refs[b]['decode_tps']} tok/s" + (f" at ×{b}" if b else "") for b in batches) + "."
             + (f" `×B` rows decode B sequences at once ({', '.join(map(str, batches))}), {a.tokens} tokens each with EOS ignored; "
                f"tok/s is the aggregate over all sequences; llama.cpp decodes the same prompts through its batch API "
                f"(Tools/batch_peer.py) with the same context per sequence; `same ids` compares every sequence with the uncapped "
                f"flexrun run of the same batch." if a.batch else "")
             + (f" The peer runs llama.cpp through llama-cpp-python with mmap; its caps are raised by the "
                f"interpreter's own footprint ({fmt_bytes(overhead)}, measured in the same run) so it gets the "
                f"same room for the model as the llama.cpp binary would." if a.peer_python else "")
             + (f" `flexrun speculate` is flexrun with `--speculate {a.speculate}` (prompt lookup drafts verified several per pass; "
                f"its ids must equal the uncapped plain run's)." if a.speculate else "")
             + (f" `flexrun packed` runs `{os.path.basename(a.packed)}` ({os.path.getsize(a.packed) / 1e6:.1f} MB), "
                f"the same model packed by `flexrun pack`, under the same caps (computed from `--model`'s size); "
                f"its ratio is against the `--model` row, from the same repeats." if a.packed else ""), "",
             "| cap | engine | decode tok/s | ratio | prefill s | peak cgroup usage | under cap | OOM kills | exit | same ids as uncapped | disk read per token (planned) | stalls s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in fractions:
        raw = next((r for r in rows if r["fraction"] == f and r["engine"] == "flexrun"), None)
        for r in (x for x in rows if x["fraction"] == f):
            peer = next((x for x in rows if x["fraction"] == f and x["engine"].startswith("llama") and x.get("batch") == r.get("batch")), None)
            single = next((x for x in rows if x["fraction"] == f and x["engine"].startswith(r["engine"].split(" ×")[0] + " ×")
                           and x.get("batch") == 1), None)
            ratio = ""
            if r["engine"].startswith("flexrun") and r["engine"] != "flexrun packed" and peer and peer.get("decode_tps") and r.get("decode_tps"):
                ratio = f"{r['decode_tps'] / peer['decode_tps']:.1f}× llama.cpp"
            if r.get("batch", 1) and r.get("batch", 1) > 1 and single and single.get("decode_tps") and r.get("decode_tps"):
                ratio += ("; " if ratio else "") + f"{r['decode_tps'] / single['decode_tps']:.2f}× its ×1"
            if r["engine"] == "flexrun packed" and raw and raw.get("decode_tps") and r.get("decode_tps"):
                ratio = f"{r['decode_tps'] / raw['decode_tps']:.2f}× the row above"
            if r["engine"] == "flexrun speculate" and raw and raw.get("decode_tps") and r.get("decode_tps"):
                ratio += f"; {r['decode_tps'] / raw['decode_tps']:.2f}× plain flexrun"
                if r.get("tokens_per_pass"):
                    ratio += f" ({r['tokens_per_pass']:.2f} tokens per pass, {r['accepted']}/{r['drafted']} drafts accepted)"
            tps = f"{r['decode_tps']:.2f}" if r.get("decode_tps") else "–"
            if len(r.get("decode_runs", [])) > 1:
                tps += " (" + ", ".join(f"{x:.1f}" if x else "–" for x in r["decode_runs"]) + ")"
            if r.get("partial_tokens") is not None:
                tps += f" ({r['partial_tokens']} tokens before the {a.timeout:g} s timeout)"
            pre = f"{r['prefill_s']:.3f}" if r.get("prefill_s") is not None else "–"
            read = f"{r.get('read_per_token') or '–'} ({r.get('planned_per_token') or '–'})" if r["engine"].startswith("flexrun") else "–"
            same = {True: "yes", False: "**no**", None: "–"}[r["same_ids"]]
            stall = f"{r['stall_s']:.2f}" if r.get("stall_s") is not None else "–"
            lines.append(f"| {int(f * 100)}% ({fmt_bytes(r['cap'])}) | {r['engine']} | {tps} | {ratio} | {pre} | {fmt_bytes(r['peak'])} | "
                         f"{'yes' if r['under_cap'] else 'no'} | {r['oom_kills']} | {r['exit']} | {same} | {read} | {stall} |")
    open(os.path.join(a.out, "sweep.md"), "w").write("\n".join(lines) + "\n")
    svg_plot(rows, os.path.join(a.out, "sweep.svg"), f"{name}: " + ("aggregate " if a.batch else "") + "decode tok/s under a memory cgroup")
    print("\n".join(lines))
    for extra in [prompt_file, os.path.join(a.out, ".peer.py")] + list(batch_files.values()):
        if os.path.exists(extra):
            os.remove(extra)


if __name__ == "__main__":
    main()
