#!/usr/bin/env python3
"""RAP study (docs/RAP.md): each policy's masks over the evaluation grid with their held-out
quality, and decode speed of the 80 % resident-only masks against dense in memory.

Usage: python3 Tools/rap_study.py [--flexrun PATH] [--speed] [--out docs/rap]

Quality: `flexrun prune policies --json --held-out docs/rap/gsi-heldout.json` (the held-out
table is measured by `flexrun prune quality --first 2048 --tokens 1024 -o docs/rap/gsi-heldout.json
docs/pruning/gsi.json`; calibration is tokens 0-2047, never the reported split).
Speed (--speed): for each workload (batch B, context S), B prompts of S-48 tokens decode 32
tokens with the 80 % resident-only mask of each policy and dense, alternating, 3 rounds,
medians; in memory (tok/s of the model with the mask, without a cap) so the ratio is the mask's.
"""
import argparse, json, os, statistics, subprocess, sys

def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"rap_study: {' '.join(cmd)} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
    return p

def svg_lines(series, title, ylabel, path, ymin=None, ymax=None):
    """A small line plot: series = {name: [(x, y), ...]}; x is the budget in %."""
    W, H, L, R, T, B = 560, 340, 60, 130, 36, 44
    xs = [x for s in series.values() for x, _ in s]; ys = [y for s in series.values() for _, y in s]
    x0, x1 = min(xs), max(xs)
    y0 = ymin if ymin is not None else min(ys); y1 = ymax if ymax is not None else max(ys)
    if y1 == y0: y1 = y0 + 1
    X = lambda x: L + (x1 - x) / (x1 - x0) * (W - L - R)  # budgets fall left to right
    Y = lambda y: T + (y1 - y) / (y1 - y0) * (H - T - B)
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#7f7f7f"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>', f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">{title}</text>']
    for i in range(6):
        v = y0 + (y1 - y0) * i / 5
        out.append(f'<line x1="{L}" x2="{W-R}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#ddd"/><text x="{L-6}" y="{Y(v)+4:.1f}" text-anchor="end">{v:.3g}</text>')
    for x in sorted(set(xs)):
        out.append(f'<text x="{X(x):.1f}" y="{H-B+16}" text-anchor="middle">{x:g}%</text>')
    out.append(f'<text x="{(L+W-R)/2}" y="{H-8}" text-anchor="middle">memory budget (share of the dense footprint)</text>')
    out.append(f'<text x="14" y="{(T+H-B)/2}" transform="rotate(-90 14 {(T+H-B)/2})" text-anchor="middle">{ylabel}</text>')
    for k, (name, pts) in enumerate(series.items()):
        c = colors[k % len(colors)]
        pts = sorted(pts, reverse=True)
        out.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (c, " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)))
        out.append(f'<text x="{W-R+8}" y="{T+16*k+10}" fill="{c}">{name}</text>')
    out.append("</svg>")
    open(path, "w").write("\n".join(out) + "\n")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexrun", default=".build/release/flexrun")
    ap.add_argument("--profile", default="docs/pruning/gsi.json")
    ap.add_argument("--held-out", default="docs/rap/gsi-heldout.json")
    ap.add_argument("--out", default="docs/rap")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = [json.loads(l) for l in run([a.flexrun, "prune", "policies", "--json", "--held-out", a.held_out, a.profile]).stdout.splitlines()]
    held = json.load(open(a.held_out))["quality"]
    dense_top1, dense_nll = held["dense"]["top1"], held["dense"]["nll"]
    open(os.path.join(a.out, "policies.jsonl"), "w").write("".join(json.dumps(r) + "\n" for r in rows))
    # Mean held-out top-1 (relative to dense) and perplexity per policy and budget, per mode.
    summary = {}
    for r in rows:
        key = ("resident-only" if r["residentOnly"] else "streaming", r["policy"], round(100 * r["budget"]))
        top1 = r.get("heldOutTop1", 0.0); nll = r.get("heldOutNLL")
        summary.setdefault(key, []).append((top1 / dense_top1, nll))
    lines = ["| mode | policy | " + " | ".join(f"{b}%" for b in range(100, 30, -10)) + " | mean |", "|---" * 10 + "|"]
    plots = {}
    for mode in ["resident-only", "streaming"]:
        for pol in ["greedy", "rl", "oracle"]:
            cells, allq = [], []
            for b in range(100, 30, -10):
                v = summary.get((mode, pol, b), [])
                q = statistics.mean(x for x, _ in v) if v else 0
                allq += [x for x, _ in v]
                cells.append(f"{100*q:.1f}")
                plots.setdefault(mode, {}).setdefault(pol, []).append((b, 100 * q))
            lines.append(f"| {mode} | {pol} | " + " | ".join(cells) + f" | {100*statistics.mean(allq):.1f} |")
    table = "\n".join(lines)
    for mode, series in plots.items():
        svg_lines(series, f"Held-out top-1, % of dense ({mode})", "top-1 / dense top-1 (%)", os.path.join(a.out, f"quality-{mode}.svg"), 0, 105)
    means = {p: statistics.mean(r.get("heldOutTop1", 0) / dense_top1 for r in rows if r["policy"] == p) for p in ["greedy", "rl", "oracle"]}
    calib = {p: statistics.mean(r["quality"] for r in rows if r["policy"] == p) for p in ["greedy", "rl", "oracle"]}
    us = {p: statistics.median(r["microseconds"] for r in rows if r["policy"] == p) for p in ["greedy", "rl", "oracle"]}
    report = {"denseHeldOutTop1": dense_top1, "denseHeldOutNLL": dense_nll, "meanRelativeTop1": means, "meanCalibrationQuality": calib,
              "medianMicroseconds": us, "table": table}
    # 80 % resident-only, over the workload grid (acceptance 2): quality of each policy's mask.
    at80 = {}
    for r in rows:
        if r["residentOnly"] and round(100 * r["budget"]) == 80:
            at80.setdefault(r["policy"], []).append(r)
    report["residentOnly80"] = {p: {"meanRelativeTop1": statistics.mean(x.get("heldOutTop1", 0) / dense_top1 for x in v),
                                    "meanPerplexity": statistics.mean(2.718281828 ** x["heldOutNLL"] for x in v if "heldOutNLL" in x),
                                    "masks": {f"B{x['batch']}xS{x['sequence']}": x.get("mask", "") for x in v}} for p, v in at80.items()}
    if a.speed:
        speed = {}
        prompt_words = open("../shared/fixtures/text/devtext.txt").read().split()
        for r in at80.get("rl", []):
            b, s = r["batch"], r["sequence"]
            if s > 512: continue  # the long workloads take minutes each; see docs/RAP.md
            text = "\n".join(" ".join(prompt_words[i*300:(i*300)+int((s-48)*0.7)]) for i in range(b))
            pf = os.path.join(a.out, f".prompts-{b}.txt"); open(pf, "w").write(text + "\n")
            rates = {"dense": [], "rl": []}
            for _ in range(a.rounds):
                for name, mask in [("dense", ""), ("rl", r.get("mask", ""))]:
                    cmd = [a.flexrun, "--parallel", str(b), "--ctx", str(s), "-n", "32", "--ignore-eos", "--stats", "--threads", "2", pf]
                    if mask and mask != "none": cmd[1:1] = ["--skip", mask]
                    err = run(cmd).stderr
                    line = next(l for l in err.splitlines() if "aggregate:" in l)
                    rates[name].append(float(line.split("aggregate:")[1].split()[0]))
            os.remove(pf)
            speed[f"B{b}xS{s}"] = {k: statistics.median(v) for k, v in rates.items()}
            speed[f"B{b}xS{s}"]["ratio"] = speed[f"B{b}xS{s}"]["rl"] / speed[f"B{b}xS{s}"]["dense"]
            print(f"speed B{b} S{s}: {speed[f'B{b}xS{s}']}", file=sys.stderr)
        report["speed80"] = speed
    json.dump(report, open(os.path.join(a.out, "study.json"), "w"), indent=1)
    print(table)
    print(json.dumps({k: v for k, v in report.items() if k != "table"}, indent=1))

if __name__ == "__main__":
    main()
