#!/usr/bin/env python3
"""Prefill in one process, decode in another under a cap (issue 19, acceptance 4).

`flexrun prefill --serve SOCKET` runs a 512-token prompt from held-out devtext (tokens 2048 on)
in memory; `flexrun decode --from SOCKET` continues it in a child memory cgroup at a fraction of
the model's need (sweep.py's rule: file size + 40 MiB runtime allowance, so 50 % is the sweep's),
with `--mem-limit` the same and the page cache dropped first. The reference is one uninterrupted
run in memory. Reports: same ids, the state's bytes, the hand-off time, both sides' wall time, the
decode side's peak against the cap and OOM kills.

Run as root:  python3 Tools/handoff_cgroup.py [--flexrun PATH] [--fraction 0.5] [-n 64] [--runs 3]
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sweep  # noqa: E402  (Cgroup, drop_caches, DEFAULT_MODEL)


def ids(stderr):
    m = re.search(r"flexrun: ids: ([0-9 ]*)", stderr)
    return m.group(1).split() if m else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexrun", default=os.path.join(os.path.dirname(HERE), ".build/release/flexrun"))
    ap.add_argument("--model", default=sweep.DEFAULT_MODEL)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json")
    a = ap.parse_args()
    devtext = os.path.join(os.path.dirname(HERE), "..", "shared", "fixtures", "text", "devtext.txt")
    # About 512 held-out tokens as text: the words from where the text passes token 2048 on,
    # both ends found by bisection on the tokenizer's count.
    text = open(devtext, encoding="utf-8").read()
    prompt_file = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
    words = text.split(" ")

    def count(piece):
        out = subprocess.run([a.flexrun, "tokenize", "--model", a.model, "-"], input=piece, capture_output=True, text=True).stdout
        return len(json.loads(out or "[]"))

    def first_reaching(lo, hi, target, start):
        while lo < hi:
            mid = (lo + hi) // 2
            if count(" ".join(words[start:mid])) >= target:
                hi = mid
            else:
                lo = mid + 1
        return lo

    lo = first_reaching(0, len(words), 2048, 0)
    hi = first_reaching(lo, len(words), 512, lo)
    prompt = " ".join(words[lo:hi])
    prompt_file.write(prompt)
    prompt_file.close()
    size = os.path.getsize(a.model)
    cap = int(a.fraction * size + 40 * 2**20)
    common = ["--model", a.model, "--temp", "0", "-n", str(a.n), "--ctx", "1024", "--print-ids", "--stats"]
    reference = subprocess.run([a.flexrun] + common + [prompt_file.name], capture_output=True, text=True)
    ref_ids = ids(reference.stderr)
    prompt_tokens = re.search(r"prompt: (\d+) tokens", reference.stderr).group(1)
    rows = []
    for run in range(a.runs):
        sock = f"/tmp/flexrun-handoff-{os.getpid()}-{run}.sock"
        t0 = time.monotonic()
        pre = subprocess.Popen([a.flexrun, "prefill", "--serve", sock] + common + [prompt_file.name], stderr=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, text=True)
        r = sweep.run_in_cgroup([a.flexrun, "decode", "--from", sock, "--mem-limit", str(cap)] + common, cap, f"handoff{run}", 600)
        pre_err = pre.communicate(timeout=600)[1]
        wall = time.monotonic() - t0
        state = re.search(r"state ([0-9.]+ [KMG]iB)", pre_err)
        handed = re.search(r"handed over ([0-9.]+ [KMG]iB) in ([0-9.]+) s", pre_err)
        decode_tps = re.search(r"decode: \d+ tokens in [0-9.]+ s \(([0-9.]+) tok/s\)", r["stderr"])
        rows.append({
            "same_ids": ids(r["stderr"]) == ref_ids and ref_ids is not None,
            "state": state.group(1) if state else None,
            "handoff_seconds": float(handed.group(2)) if handed else None,
            "decode_tok_s": float(decode_tps.group(1)) if decode_tps else None,
            "wall_seconds": wall, "peak": r["peak"], "oom_kills": r["oom_kills"], "exit": r["exit"],
        })
        if r["exit"] != 0:
            print(r["stderr"][-500:], file=sys.stderr)
    os.unlink(prompt_file.name)
    print(f"prompt: {prompt_tokens} held-out devtext tokens (2048 on); cap {cap / 2**20:.1f} MiB ({a.fraction:.0%}); {a.n} greedy tokens")
    print("| run | same ids as one run | state | hand-off s | decode tok/s | wall s | decode peak ≤ cap | OOM |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        peak = f"{r['peak'] / 2**20:.1f} MiB" if r["peak"] else "?"
        print(f"| {i + 1} | {'yes' if r['same_ids'] else 'NO'} | {r['state']} | {r['handoff_seconds']} | {r['decode_tok_s']} | "
              f"{r['wall_seconds']:.2f} | {peak} {'yes' if r['peak'] and r['peak'] <= cap else 'NO'} | {r['oom_kills']} |")
    med = statistics.median([r["decode_tok_s"] or 0 for r in rows])
    print(f"median decode tok/s under the cap: {med:.1f}")
    if a.json:
        json.dump({"cap": cap, "prompt_tokens": int(prompt_tokens), "rows": rows}, open(a.json, "w"), indent=1)
    if not all(r["same_ids"] and r["exit"] == 0 for r in rows):
        sys.exit("handoff: FAIL: ids differ or a side failed")


if __name__ == "__main__":
    main()
