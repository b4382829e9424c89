"""Batched decoding side by side: FlexRun (`--parallel N`) against llama.cpp decoding the same
prompts as N parallel sequences (Tools/batch_peer.py), in memory.

Runs, per round, in alternating order: flexrun at batch 1, flexrun at batch N, llama.cpp at
batch N, llama.cpp at batch 1, each a fresh process; prints medians over rounds and the medians
of the per-round ratios (each ratio compares runs made seconds apart, on a noisy machine).
Every sequence generates -n tokens with EOS ignored, greedy.
"""
import argparse, json, os, re, statistics, subprocess, sys, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROMPTS = ["The capital of France is", "Write a haiku about disks.", "1, 2, 3, 4,", "Once upon a time, in a small village,",
           "def fibonacci(n):", "The three primary colors are", "Q: What is the boiling point of water? A:", "Les chats sont"]


def flexrun(binary, model, prompts_file, n, parallel, threads):
    out = subprocess.run([binary, "--model", model, "--parallel", str(parallel), "-n", str(n), "--temp", "0", "--ignore-eos",
                          "--threads", str(threads), "--stats", "--print-ids", prompts_file], capture_output=True, text=True, check=True)
    m = re.search(r"aggregate: ([\d.]+) tok/s decoding", out.stderr)
    ids = {}
    for line in out.stdout.splitlines():
        o = json.loads(line)
        ids[o["id"]] = o["ids"]
    return float(m.group(1)), [ids[i] for i in sorted(ids)]


def llama(python, model, prompts_file, n, parallel, threads):
    out = subprocess.run([python, os.path.join(HERE, "batch_peer.py"), "--model", model, "--prompts", prompts_file,
                          "--parallel", str(parallel), "-n", str(n), "--threads", str(threads)], capture_output=True, text=True, check=True)
    o = json.loads(out.stdout)
    return o["aggregate_decode_tps"], o["ids"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexrun", required=True)
    ap.add_argument("--python", required=True, help="the peer venv's python")
    ap.add_argument("--model", required=True)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    many, one = os.path.join(tmp, "many.txt"), os.path.join(tmp, "one.txt")
    open(many, "w").write("\n".join(PROMPTS[: a.parallel]) + "\n")
    open(one, "w").write(PROMPTS[0] + "\n")
    rows = {"f1": [], "fN": [], "lN": [], "l1": []}
    agree = []
    for r in range(a.rounds):
        order = [("f1", one, 1), ("fN", many, a.parallel), ("lN", many, a.parallel), ("l1", one, 1)]
        if r % 2: order.reverse()
        ids = {}
        for key, f, p in order:
            tps, i = (flexrun(a.flexrun, a.model, f, a.n, p, a.threads) if key[0] == "f"
                      else llama(a.python, a.model, f, a.n, p, a.threads))
            rows[key].append(tps)
            ids[key] = i
        # Greedy ids of each sequence: FlexRun batched vs llama.cpp batched, tokens equal before the first difference.
        same = [next((k for k, (x, y) in enumerate(zip(fi, li)) if x != y), min(len(fi), len(li))) for fi, li in zip(ids["fN"], ids["lN"])]
        agree.append(same)
        print(f"round {r + 1}: flexrun b1 {rows['f1'][-1]:.1f} b{a.parallel} {rows['fN'][-1]:.1f} | llama.cpp b{a.parallel} {rows['lN'][-1]:.1f} "
              f"b1 {rows['l1'][-1]:.1f} | ids equal for the first {same} tokens", file=sys.stderr)
    med = {k: statistics.median(v) for k, v in rows.items()}
    def ratios(x, y): return [p / q for p, q in zip(rows[x], rows[y])]
    print(f"\nSmolLM2-135M Q4_1 ({os.path.basename(a.model)}), {a.threads} threads, {a.parallel} sequences x {a.n} tokens, {a.rounds} rounds\n")
    print("| figure | median tok/s | ratio (median of rounds) | per round |")
    print("|---|---|---|---|")
    for label, key, rx in ((f"flexrun batch {a.parallel} / flexrun batch 1", "fN", ("fN", "f1")),
                           (f"flexrun batch {a.parallel} / llama.cpp batch {a.parallel}", "fN", ("fN", "lN")),
                           (f"llama.cpp batch {a.parallel} / llama.cpp batch 1", "lN", ("lN", "l1")),
                           ("flexrun batch 1 / llama.cpp batch 1", "f1", ("f1", "l1"))):
        rs = ratios(*rx)
        print(f"| {label} | {med[key]:.1f} | {statistics.median(rs):.2f} | " + " ".join(f"{x:.2f}" for x in rs) + " |")
    print(f"\naggregate decode tok/s medians: flexrun b1 {med['f1']:.1f}, b{a.parallel} {med['fN']:.1f}; "
          f"llama.cpp b1 {med['l1']:.1f}, b{a.parallel} {med['lN']:.1f}")
    if a.json:
        json.dump({"rows": rows, "agree": agree}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
