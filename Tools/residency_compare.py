"""Head-first against layers-first residency under memory caps, measured (issue: Gemma 3).

For each cap (fraction x file size + allowance) the two residency orders run alternately,
--repeat times each, in a child memory cgroup with the page cache dropped before every run
(Tools/sweep.py's cgroup and run helpers). Prints a markdown table of decode tok/s medians, the
per-round ratio layers-first / head-first, bytes read per token and whether the ids are the
uncapped run's, and writes the raw numbers as JSON.

  python3 Tools/residency_compare.py --flexrun .build/release/flexrun --model M.gguf \\
      --fractions 0.75,0.5,0.35 --allowance-mib 80 --json docs/gemma/residency.json
"""
import argparse, json, os, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # noqa: E402

ORDERS = ["head-first", "layers-first"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexrun", required=True)
    ap.add_argument("--model", default=sweep.DEFAULT_MODEL)
    ap.add_argument("--fractions", default="0.75,0.5,0.35")
    ap.add_argument("--allowance-mib", type=float, default=80)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--prompt", default="Explain what artificial intelligence is.")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--json")
    a = ap.parse_args()
    size = os.path.getsize(a.model)
    prompt = os.path.join(tempfile.mkdtemp(), "prompt.txt")
    open(prompt, "w").write(a.prompt)

    def run(order, limit):
        cmd = sweep.flexrun_cmd(a, prompt, limit) + ["--residency", order]
        r = sweep.run_in_cgroup(cmd, limit, f"flexrun-residency-{os.getpid()}", a.timeout)
        out = sweep.parse_flexrun(r)
        out.update(exit=r["exit"], peak=r["peak"], oom_kills=r["oom_kills"], limit=limit)
        return out

    reference = run("head-first", None)["ids"]
    rows = []
    for f in [float(x) for x in a.fractions.split(",")]:
        limit = int(f * size + a.allowance_mib * 2**20)
        runs = {o: [] for o in ORDERS}
        for i in range(a.repeat):
            for o in (ORDERS if i % 2 == 0 else ORDERS[::-1]):
                r = run(o, limit)
                runs[o].append(r)
                print(f"{f:.0%} {o}: {r['decode_tps']} tok/s, read/token {r.get('read_per_token')}, exit {r['exit']}", file=sys.stderr)
        ratios = [l["decode_tps"] / h["decode_tps"] for h, l in zip(runs["head-first"], runs["layers-first"])
                  if h["decode_tps"] and l["decode_tps"]]
        rows.append({"fraction": f, "limit": limit, "runs": runs, "ratio": statistics.median(ratios) if ratios else None,
                     "ratios": ratios})

    print(f"\n{os.path.basename(a.model)}, {a.threads} threads, {a.tokens} greedy tokens, {a.repeat} rounds per cap, "
          f"orders alternating, page cache dropped before each run\n")
    print("| cap | head-first tok/s | layers-first tok/s | ratio layers/head (median of rounds) | read per token head / layers | same ids | OOM |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        h, l = r["runs"]["head-first"], r["runs"]["layers-first"]
        med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else None
        same = all(x["ids"] == reference for x in h + l)
        oom = sum(x["oom_kills"] for x in h + l)
        rp = lambda xs: xs[0].get("read_per_token") or "–"
        ratio = f"{r['ratio']:.2f} ({', '.join(f'{x:.2f}' for x in r['ratios'])})" if r["ratio"] else "–"
        print(f"| {r['fraction']:.0%} ({r['limit'] / 2**20:.1f} MiB) | {med([x['decode_tps'] for x in h]):.2f} | "
              f"{med([x['decode_tps'] for x in l]):.2f} | {ratio} | {rp(h)} / {rp(l)} | {'yes' if same else 'NO'} | {oom} |")
    if a.json:
        for r in rows:
            for o in ORDERS:
                for x in r["runs"][o]:
                    x.pop("stderr", None)
        json.dump({"model": os.path.basename(a.model), "rows": rows}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
