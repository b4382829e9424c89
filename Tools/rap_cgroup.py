"""RAP under real memory caps: issue 14's cgroup runs, with caches dropped before each.

  fit    8 sequences x 2,048 positions at 60 % of their dense footprint under --prune fit
         (where --prune off refuses): exit status, OOM kills, the group's peak against the cap,
         every decision, and the held-out quality of the masks used.
  steps  the same workload while the cap steps 100 % -> 60 % -> 40 % -> 80 % of the dense
         footprint, at 500, 1,000 and 1,500 generated tokens (from the --stats progress lines). Shrinking follows the protocol in docs/CLI.md: lower the soft limit, SIGHUP,
         wait until the group's usage fits, then lower the hard limit; growing raises both, then
         SIGHUP. Peak per phase, the time each shrink took, and the time-weighted held-out quality
         of the masks in force against a static mask chosen for the worst phase (the policy's
         choice for 8 x 2,048 at 40 %, from docs/rap/policies.jsonl).
  auto   4 sequences x 512 at 50 % under --prune auto --min-tps T for T = 1, 1.5 and 2 x the
         rate of --prune fit at that cap (streaming, skipping only to fit), against the quality
         of the --resident-only mask at the same cap.

Held-out quality is top-1 next-token accuracy and NLL on devtext tokens 2048-3071 (flexrun prune
quality --mask), the split nothing was tuned on. Run as root:
  python3 Tools/rap_cgroup.py [--only fit,steps,auto] [--out docs/rap]
"""
import argparse, json, os, re, signal, statistics, subprocess, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sweep import Cgroup, drop_caches  # noqa: E402

MIB = 1 << 20


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"rap_cgroup: {' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return r


def dense_footprint(flexrun, batch, ctx):
    """The plan's in-memory total for this load: every weight resident, the whole KV cache."""
    out = sh([flexrun, "plan", "--parallel", str(batch), "--ctx", str(ctx)]).stdout
    m = re.search(r"in memory: ([\d.]+) MiB", out)
    if not m:
        raise SystemExit(f"rap_cgroup: cannot read the dense footprint from flexrun plan:\n{out}")
    return int(float(m.group(1)) * MIB)


def prompts(path, batch, words=30):
    text = open("../shared/fixtures/text/devtext.txt").read().split()
    with open(path, "w") as f:
        for i in range(batch):
            f.write(" ".join(text[i * 400:i * 400 + words]) + "\n")


class Group(Cgroup):
    def usage(self):
        v = self._read("memory.usage_in_bytes" if self.version == 1 else "memory.current").strip()
        return int(v) if v.isdigit() else 0

    def set_soft(self, limit):
        self._write("memory.soft_limit_in_bytes" if self.version == 1 else "memory.high", limit)

    def try_hard(self, limit):
        """Lower or raise the hard limit; False while the group's usage cannot fit under it."""
        if self.version == 2 and self.usage() > limit:
            return False
        try:
            if self.version == 1:
                # v1 keeps limit <= memsw.limit: raise memsw first when growing, last when shrinking.
                files = ["memory.limit_in_bytes"]
                if os.path.exists(os.path.join(self.dir, "memory.memsw.limit_in_bytes")):
                    grow = limit > int(self._read("memory.limit_in_bytes").strip() or 0)
                    files = ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"] if grow else files + ["memory.memsw.limit_in_bytes"]
                for f in files:
                    self._write(f, limit)
            else:
                self.set_limit(limit)
            return True
        except OSError:  # v1: EBUSY, the kernel could not reclaim down to it
            return False


def run(flexrun_cmd, cap, steps=(), timeout=1800):
    """Runs flexrun in a fresh child group at `cap`. `steps`: (tokens the longest sequence has
    generated, new cap), read from the --stats progress lines. Returns the outcome with
    per-phase peaks sampled at 20 Hz."""
    import threading
    g = Group(f"flexrun-rap-{os.getpid()}")
    g.set_limit(cap)
    g.set_soft(cap)
    drop_caches()
    start = time.time()
    p = subprocess.Popen(flexrun_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=g.join)
    err, longest = [], [0]

    def read_stderr():
        for line in p.stderr:
            err.append(line)
            m = re.search(r"longest sequence (\d+) generated", line)
            if m:
                longest[0] = int(m.group(1))
    readers = [threading.Thread(target=read_stderr), threading.Thread(target=lambda: p.stdout.read())]
    for t in readers:
        t.start()
    phases = [{"cap": cap, "from": 0.0, "at": 0, "peak": 0}]
    pending = list(steps)
    shrink = None  # (target, asked at)
    try:
        while p.poll() is None:
            now = time.time() - start
            u = g.usage()
            phases[-1]["peak"] = max(phases[-1]["peak"], u)
            if shrink is not None:
                target, asked = shrink
                if g.try_hard(target):
                    phases.append({"cap": target, "from": now, "at": longest[0], "peak": g.usage(), "shrinkSeconds": now - asked})
                    shrink = None
                elif now - asked > 60:
                    raise SystemExit(f"rap_cgroup: the group did not shrink to {target} within 60 s of SIGHUP")
            elif pending and longest[0] >= pending[0][0]:
                _, new = pending.pop(0)
                if new < phases[-1]["cap"]:
                    g.set_soft(new)
                    p.send_signal(signal.SIGHUP)
                    shrink = (new, now)
                else:
                    if not g.try_hard(new):
                        raise SystemExit(f"rap_cgroup: could not raise the group's limit to {new}")
                    g.set_soft(new)
                    p.send_signal(signal.SIGHUP)
                    phases.append({"cap": new, "from": now, "at": longest[0], "peak": u})
            if now > timeout:
                p.kill()
            time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.kill()
        for t in readers:
            t.join()
        p.wait()
    result = {"exit": p.returncode, "oomKills": g.oom_kills(), "groupPeak": g.peak(), "wall": time.time() - start, "phases": phases,
              "stderr": "".join(err)}
    g.remove()
    return result


def decisions(stderr):
    """The --stats prune lines: time, mask, cap."""
    rows = {}
    for line in stderr.splitlines():
        m = re.search(r"prune \[([\d.]+) s, (\w+)\]: (.*?): skipping (\d+) blocks \(([^)]*)\)", line)
        if m:  # shown live, then again in the summary with its measurements: keep the last
            rows[m.group(1)] = {"at": float(m.group(1)), "policy": m.group(2), "why": m.group(3), "count": int(m.group(4)),
                                "mask": "" if m.group(5) == "none" else m.group(5), "line": line.removeprefix("flexrun: ")}
    return sorted(rows.values(), key=lambda r: r["at"])


def aggregate(stderr):
    m = re.search(r"aggregate: ([\d.]+) tok/s", stderr)
    return float(m.group(1)) if m else None


class Quality:
    """Held-out quality of masks, measured once each."""

    def __init__(self, flexrun, profile):
        self.flexrun, self.profile, self.cache = flexrun, profile, {}

    def of(self, masks):
        todo = sorted({m for m in masks if m not in self.cache and m != ""})
        if todo:
            cmd = [self.flexrun, "prune", "quality", "--first", "2048", "--tokens", "1024", "--threads", "2"]
            for m in todo:
                cmd += ["--mask", m]
            for line in sh(cmd + [self.profile]).stdout.splitlines():
                r = json.loads(line)
                self.cache[r["blocks"]] = r
        if "" not in self.cache:
            self.cache[""] = json.loads(sh([self.flexrun, "prune", "quality", "--first", "2048", "--tokens", "1024", "--mask",
                                            "attn:0", self.profile]).stdout.splitlines()[0])
        return {m: self.cache[m] for m in masks}


def canonical(mask):
    return ",".join(sorted(mask.split(","), key=lambda b: (int(b.split(":")[1]), b))) if mask else ""


def time_weighted(ds, quality, end):
    """Mean over the run of the top-1 of the mask in force, weighted by time (dense before the
    first decision)."""
    if not ds or ds[0]["at"] > 0:
        ds = [{"at": 0.0, "mask": ""}] + ds
    total, acc = 0.0, 0.0
    for i, d in enumerate(ds):
        until = ds[i + 1]["at"] if i + 1 < len(ds) else end
        span = max(0.0, until - d["at"])
        total += span
        acc += span * quality[canonical(d["mask"])]["top1"]
    return acc / total if total else quality[canonical(ds[-1]["mask"])]["top1"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexrun", default=".build/release/flexrun")
    ap.add_argument("--profile", default="docs/pruning/gsi.json")
    ap.add_argument("--policy", default="greedy", choices=["greedy", "rl"])
    ap.add_argument("--only", default="fit,steps,auto")
    ap.add_argument("--out", default="docs/rap")
    a = ap.parse_args()
    only = set(a.only.split(","))
    os.makedirs(a.out, exist_ok=True)
    q = Quality(a.flexrun, a.profile)
    report_path = os.path.join(a.out, "cgroup.json")
    report = json.load(open(report_path)) if os.path.exists(report_path) else {}
    dense_q = q.of([""])[""]
    report["denseHeldOut"] = {"top1": dense_q["top1"], "nll": dense_q["nll"]}
    pf = os.path.join(a.out, ".rap-prompts.txt")
    common = ["--ctx", "2048", "--ignore-eos", "--stats", "--threads", "2", "--prune-policy", a.policy, "--profile", a.profile]

    if "fit" in only or "steps" in only:
        F = dense_footprint(a.flexrun, 8, 2048)
        prompts(pf, 8)
        cmd = [a.flexrun, "--parallel", "8", "-n", "1990", "--prune", "fit"] + common + [pf]
        if "fit" in only:
            cap = int(0.6 * F)
            refused = subprocess.run([a.flexrun, "plan", "--parallel", "8", "--ctx", "2048", "--mem-limit", str(cap)],
                                     capture_output=True, text=True)
            r = run(cmd, cap)
            ds = decisions(r["stderr"])
            qual = q.of([canonical(d["mask"]) for d in ds])
            final = canonical(ds[-1]["mask"]) if ds else ""
            report["fit"] = {"denseFootprint": F, "cap": cap, "offRefuses": refused.returncode != 0,
                             "offMessage": refused.stderr.strip().splitlines()[-1] if refused.stderr.strip() else "",
                             "exit": r["exit"], "oomKills": r["oomKills"], "groupPeak": r["groupPeak"],
                             "peakSampled": r["phases"][0]["peak"], "tokPerS": aggregate(r["stderr"]), "wall": r["wall"],
                             "decisions": [d["line"] for d in ds], "finalMask": final,
                             "finalHeldOut": {"top1": qual.get(final, dense_q)["top1"], "nll": qual.get(final, dense_q)["nll"]},
                             "timeWeightedTop1": time_weighted(ds, q.of([canonical(d["mask"]) for d in ds] + [""]), r["wall"])}
            print(json.dumps({k: v for k, v in report["fit"].items() if k != "decisions"}, indent=1), file=sys.stderr)
            json.dump(report, open(report_path, "w"), indent=1)
        if "steps" in only:
            fr = [1.0, 0.6, 0.4, 0.8]
            r = run(cmd, int(F * fr[0]), steps=[(500 * (i + 1), int(F * f)) for i, f in enumerate(fr[1:])])
            ds = decisions(r["stderr"])
            rows = [json.loads(l) for l in open(os.path.join(a.out, "policies.jsonl"))]
            static = next(x for x in rows if not x["residentOnly"] and x["policy"] == a.policy and x["batch"] == 8
                          and x["sequence"] == 2048 and round(100 * x["budget"]) == 40)
            static_mask = canonical("" if static.get("mask", "none") == "none" else static["mask"])
            qual = q.of([canonical(d["mask"]) for d in ds] + [static_mask, ""])
            phases = r["phases"]
            report["steps"] = {"denseFootprint": F, "fractions": fr, "stepEvery": 500, "exit": r["exit"], "oomKills": r["oomKills"],
                               "phases": [{"capFraction": round(p["cap"] / F, 2), "cap": p["cap"], "from": round(p["from"], 1), "atToken": p["at"],
                                           "peak": p["peak"], "peakWithinCap": p["peak"] <= p["cap"],
                                           **({"shrinkSeconds": round(p["shrinkSeconds"], 2)} if "shrinkSeconds" in p else {})} for p in phases],
                               "tokPerS": aggregate(r["stderr"]), "wall": r["wall"], "decisions": [d["line"] for d in ds],
                               "timeWeightedTop1": time_weighted(ds, qual, r["wall"]),
                               "staticMask": static_mask, "staticTop1": qual[static_mask]["top1"], "staticNLL": qual[static_mask]["nll"]}
            print(json.dumps({k: v for k, v in report["steps"].items() if k != "decisions"}, indent=1), file=sys.stderr)
            json.dump(report, open(report_path, "w"), indent=1)

    if "auto" in only:
        B, S = 4, 512
        F = dense_footprint(a.flexrun, B, S)
        cap = int(0.5 * F)
        prompts(pf, B)
        sh([a.flexrun, "calibrate", "--threads", "2"])
        base = [a.flexrun, "--parallel", str(B), "-n", str(S - 64), "--ctx", str(S), "--ignore-eos", "--stats", "--threads", "2",
                "--prune-policy", a.policy, "--profile", a.profile]
        ro = sh([a.flexrun, "plan", "--parallel", str(B), "--ctx", str(S), "--mem-limit", str(cap), "--resident-only",
                 "--prune", "fit", "--profile", a.profile, "--prune-policy", a.policy])
        m = re.search(r"skip(?:ping)? \d+ blocks? \(([^)]*)\)", ro.stdout + ro.stderr)
        ro_mask = canonical(m.group(1)) if m and m.group(1) != "none" else ""
        fit = run(base + ["--prune", "fit", pf], cap)
        fit_rate = aggregate(fit["stderr"])
        fit_ds = decisions(fit["stderr"])
        rows = []
        for mult in [1.0, 1.5, 2.0]:
            T = round(fit_rate * mult, 1)
            r = run(base + ["--prune", "auto", "--min-tps", str(T), pf], cap)
            ds = decisions(r["stderr"])
            mask = canonical(ds[-1]["mask"]) if ds else ""
            rows.append({"target": T, "multiple": mult, "exit": r["exit"], "oomKills": r["oomKills"], "groupPeak": r["groupPeak"],
                         "tokPerS": aggregate(r["stderr"]), "mask": mask, "decisions": [d["line"] for d in ds],
                         **({"stderrTail": [l for l in r["stderr"].splitlines() if "progress:" not in l][-12:]} if r["exit"] != 0 else {})})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "decisions"}), file=sys.stderr)
        qual = q.of([x["mask"] for x in rows] + [ro_mask, canonical(fit_ds[-1]["mask"]) if fit_ds else ""])
        for x in rows:
            x["heldOutTop1"] = qual[x["mask"]]["top1"]
            x["met"] = x["tokPerS"] is not None and x["tokPerS"] >= x["target"]
            x["beatsResidentOnly"] = x["heldOutTop1"] >= qual[ro_mask]["top1"]
        report[f"auto-{a.policy}"] = {"batch": B, "sequence": S, "denseFootprint": F, "cap": cap, "fitTokPerS": fit_rate,
                          "fitMask": canonical(fit_ds[-1]["mask"]) if fit_ds else "", "fitExit": fit["exit"],
                          "residentOnlyMask": ro_mask, "residentOnlyTop1": qual[ro_mask]["top1"], "runs": rows}
        json.dump(report, open(report_path, "w"), indent=1)
    if os.path.exists(pf):
        os.remove(pf)
    print(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "decisions"} if isinstance(v, dict) else v)
                      for k, v in report.items()}, indent=1))


if __name__ == "__main__":
    main()
