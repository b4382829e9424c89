#!/usr/bin/env python3
"""Speculative decoding, measured per prompt: flexrun without and with `--speculate`, and
llama.cpp (mmap), under the same cgroup caps, page cache dropped before every run, the engines
alternating within each repeat. Prints and writes a table per cap: decode tok/s (median of the
repeats), speculation's ratio to plain flexrun, both ratios to llama.cpp, acceptance, tokens per
pass, bytes read per generated token against the plan's per-pass bytes, and whether the ids equal
the plain uncapped run's. Issue 17's acceptance: the median over prompts of `auto / off` at 50%.

    sudo python3 Tools/spec_study.py --flexrun .build/release/flexrun --peer-python "$(bash Tools/peer-venv.sh)"
"""
import argparse, json, os, re, statistics, subprocess, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # noqa: E402

PROMPTS = {
    # The sweep's prompt and three of its batch prompts: open-ended text, little to look up.
    "sweep": "Explain what artificial intelligence is.",
    "haiku": "Write a haiku about disks.",
    "count": "1, 2, 3, 4,",
    "story": "Once upon a time, in a small village,",
    # Longer ones where text repeats its context.
    "summary": ("Passage: The Rhine rises in the Swiss Alps, flows north along the border between Germany and France, "
                "and turns west through the Netherlands before it reaches the North Sea near Rotterdam. It carries more "
                "freight than any other river in Europe, and the cities of Basel, Strasbourg, Cologne and Duisburg grew "
                "up on its banks.\nSummarise the passage in two sentences.\nSummary: The Rhine"),
    "list": ("Shopping list: apples, bread, butter, cheese, eggs, flour, milk, rice, sugar, tea.\n"
             "The same list again, in the same order: apples, bread,"),
    "code": ("def area_of_square(side):\n    \"\"\"Return the area of a square.\"\"\"\n    return side * side\n\n"
             "def area_of_rectangle(width, height):\n    \"\"\"Return the area of a rectangle.\"\"\"\n    return width * height\n\n"
             "def area_of_triangle(base, height):\n"),
}


def disk_rate(path, read_bps=None, device=None):
    """O_DIRECT read rate of `path` in MB/s, caches dropped (dd, 1 MiB requests at queue depth 1:
    a floor for the engine's queue-depth-16 reads, taken in the same run as what depends on it)."""
    cg = sweep.Cgroup(f"spec-disk-{os.getpid()}", read_bps, device)
    try:
        sweep.drop_caches()
        p = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M", "iflag=direct"], capture_output=True, text=True,
                           preexec_fn=cg.join)
        m = re.search(r"copied, ([\d.]+) s", p.stderr)
        return round(os.path.getsize(path) / float(m.group(1)) / 1e6) if m and float(m.group(1)) > 0 else None
    finally:
        cg.remove()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flexrun", required=True)
    ap.add_argument("--model", default=sweep.DEFAULT_MODEL)
    ap.add_argument("--fractions", default="0.5", help="caps as fractions of the file size (+ allowance); 'none' runs uncapped")
    ap.add_argument("--allowance-mib", type=float, default=40)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speculate", default="auto", choices=["auto", "lookup"])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--prompts", default=",".join(PROMPTS), help="names from: " + ", ".join(PROMPTS))
    ap.add_argument("--peer-python", help="a python with llama_cpp: also run llama.cpp (mmap)")
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--read-bps", help="throttle disk reads to this rate (e.g. 300M), standing in for a slow disk")
    ap.add_argument("--out", default="docs/speculation")
    a = ap.parse_args()
    throttle = {}
    if a.read_bps:
        throttle = dict(read_bps=sweep.parse_rate(a.read_bps, "spec_study"), device=sweep.whole_disk(a.model))
    if os.geteuid() != 0:
        raise SystemExit("spec_study: run as root (cgroups and drop_caches need it)")
    # SIGTERM unwinds like Ctrl-C, so the `finally` clauses remove the child cgroups (as sweep.py).
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.makedirs(a.out, exist_ok=True)
    size = os.path.getsize(a.model)
    overhead = sweep.peer_overhead(a.peer_python, a.timeout) if a.peer_python else 0
    peer_script = os.path.join(a.out, ".peer.py")
    if a.peer_python:
        open(peer_script, "w").write(sweep.PEER)
    disk = [disk_rate(a.model, **throttle)]
    print(f"spec_study: disk {disk[0]} MB/s (O_DIRECT, 1 MiB, queue depth 1)", file=sys.stderr)
    results = []
    names = [n for n in a.prompts.split(",") if n]
    for name in names:
        prompt = PROMPTS[name]
        pf = os.path.join(a.out, f".prompt-{name}.txt")
        open(pf, "w").write(prompt)
        ref = sweep.parse_flexrun(sweep.run_in_cgroup(sweep.flexrun_cmd(a, pf, None) + ["--ignore-eos"], None, f"spec-{os.getpid()}-ref", a.timeout))
        disk.append(disk_rate(a.model, **throttle))
        for f in a.fractions.split(","):
            cap = None if f == "none" else int(float(f) * size + a.allowance_mib * 2**20)
            # EOS ignored, as the peer does: every run decodes --tokens tokens.
            engines = [("off", sweep.flexrun_cmd(a, pf, cap) + ["--ignore-eos"], sweep.parse_flexrun),
                       (a.speculate, sweep.flexrun_cmd(a, pf, cap, speculate=a.speculate) + ["--ignore-eos"], sweep.parse_flexrun)]
            if a.peer_python:
                engines.append(("llama.cpp", [a.peer_python, peer_script, a.model, str(a.threads), str(a.tokens), prompt], sweep.parse_peer))
            runs = {e: [] for e, _, _ in engines}
            for rep in range(a.repeat):
                for e, cmd, parse in engines:
                    limit = None if cap is None else cap + (overhead if e == "llama.cpp" else 0)
                    r = sweep.run_in_cgroup(cmd, limit, f"spec-{os.getpid()}", a.timeout, **throttle)
                    p = parse(r)
                    p["oom_kills"], p["exit"] = r["oom_kills"], r["exit"]
                    m = re.search(r"(\d+) major page faults while decoding", r["stderr"])
                    p["major_faults"] = int(m.group(1)) if m else None
                    p["same_ids"] = p.get("ids") == ref["ids"] if e != "llama.cpp" else None
                    runs[e].append(p)
                    print(f"spec_study: {name} at {f}: {e} run {rep + 1}: {p.get('decode_tps')} tok/s, "
                          f"{p.get('accepted', '-')}/{p.get('drafted', '-')} accepted, exit {r['exit']}, same ids {p['same_ids']}",
                          file=sys.stderr)
            def med(e, k="decode_tps"):
                xs = [x[k] for x in runs[e] if x.get(k) is not None]
                return statistics.median(xs) if xs else None
            # Ratios per repeat (the engines ran back to back), then their median.
            def ratio(e1, e2):
                rs = [p1["decode_tps"] / p2["decode_tps"] for p1, p2 in zip(runs[e1], runs[e2])
                      if p1.get("decode_tps") and p2.get("decode_tps")]
                return statistics.median(rs) if rs else None
            row = {"prompt": name, "fraction": f, "cap": cap, "off_tps": med("off"), "spec_tps": med(a.speculate),
                   "spec_over_off": ratio(a.speculate, "off"),
                   "drafted": med(a.speculate, "drafted"), "accepted": med(a.speculate, "accepted"),
                   "tokens_per_pass": med(a.speculate, "tokens_per_pass"),
                   "read_per_token_off": runs["off"][0].get("read_per_token"), "read_per_token_spec": runs[a.speculate][0].get("read_per_token"),
                   "planned_per_pass": runs["off"][0].get("planned_per_token"),
                   "same_ids": all(x["same_ids"] for e in ("off", a.speculate) for x in runs[e]),
                   "oom_kills": sum(x["oom_kills"] or 0 for e in runs for x in runs[e]),
                   "major_faults_off": [x.get("major_faults") for x in runs["off"]],
                   "major_faults_spec": [x.get("major_faults") for x in runs[a.speculate]]}
            if a.peer_python:
                row["peer_tps"] = med("llama.cpp")
                row["off_over_peer"] = ratio("off", "llama.cpp")
                row["spec_over_peer"] = ratio(a.speculate, "llama.cpp")
            results.append(row)
        os.remove(pf)
    if os.path.exists(peer_script):
        os.remove(peer_script)
    json.dump({"model": a.model, "tokens": a.tokens, "threads": a.threads, "speculate": a.speculate, "repeat": a.repeat,
               "read_bps": a.read_bps, "disk_mb_s": disk, "rows": results},
              open(os.path.join(a.out, "study.json"), "w"), indent=1)
    def fmt(v, d=2, suffix=""):
        return "–" if v is None else f"{v:.{d}f}{suffix}"
    lines = [f"Model `{os.path.basename(a.model)}`, {a.threads} threads, {a.tokens} greedy tokens, `--speculate {a.speculate}`, "
             f"median of {a.repeat} repeats (engines alternating; ratios are medians of per-repeat ratios). Cap = fraction × file + "
             f"{a.allowance_mib:g} MiB ('none': uncapped), caches dropped before each run"
             + (f", reads throttled to {a.read_bps}/s" if a.read_bps else "")
             + f". Disk (O_DIRECT, 1 MiB requests, queue depth 1) before each prompt: {', '.join(str(d) for d in disk)} MB/s.", "",
             "| prompt | cap | plain tok/s | speculate tok/s | speculate / plain | llama.cpp tok/s | plain / llama.cpp | speculate / llama.cpp "
             "| accepted / drafted | tokens per pass | read per token plain → speculate (planned per pass) | same ids | OOM "
             "| major faults while decoding, plain / speculate (per run) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        acc = "–" if r["drafted"] is None else f"{r['accepted']:.0f} / {r['drafted']:.0f}"
        lines.append(f"| {r['prompt']} | {r['fraction']} | {fmt(r['off_tps'], 1)} | {fmt(r['spec_tps'], 1)} | **{fmt(r['spec_over_off'], 2, '×')}** "
                     f"| {fmt(r.get('peer_tps'), 1)} | {fmt(r.get('off_over_peer'), 1, '×')} | {fmt(r.get('spec_over_peer'), 1, '×')} | {acc} "
                     f"| {fmt(r['tokens_per_pass'])} | {r['read_per_token_off'] or '–'} → {r['read_per_token_spec'] or '–'} ({r['planned_per_pass'] or '–'}) "
                     f"| {'yes' if r['same_ids'] else '**no**'} | {r['oom_kills']} "
                     f"| {' '.join(str(x) for x in r['major_faults_off'])} / {' '.join(str(x) for x in r['major_faults_spec'])} |")
    for f in a.fractions.split(","):
        rs = [r["spec_over_off"] for r in results if r["fraction"] == f and r["spec_over_off"]]
        if rs:
            lines.append(f"\nAt {f}: median over {len(rs)} prompts of speculate / plain = **{statistics.median(rs):.2f}×**.")
    open(os.path.join(a.out, "study.md"), "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
