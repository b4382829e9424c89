"""Side-by-side decode and prefill speed: FlexRun against llama.cpp (llama-cpp-python).

Runs the two engines alternately, A B A B ..., for --pairs pairs on the same GGUF, prompt,
thread count and token counts, and prints each figure's median and the median of the per-pair
ratios FlexRun / llama.cpp. Alternating and pairing matter on a noisy machine: each ratio
compares two runs made seconds apart.

- decode: a 6-token prompt, then 64 greedy tokens; tok/s over the generated tokens.
- prefill: a 128-token prompt (pp128); tok/s over the prompt.
llama.cpp's own counters (llama_perf_context) give its times; flexrun's come from --stats.
--baseline BINARY runs a second flexrun (say, main's build) in every pair too, for before/after ratios
measured in the same window.
"""
import argparse, os, re, statistics, subprocess, sys, tempfile, json

import llama_cpp
from llama_cpp import Llama

DEFAULT_MODEL = os.path.join(os.environ.get("FLEXRUN_MODELS", os.path.join(
    os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "flexrun", "models")), "SmolLM2-135M-Instruct.Q4_1.gguf")
HERE = os.path.dirname(os.path.abspath(__file__))
DEVTEXT = os.path.join(HERE, "..", "..", "shared", "fixtures", "text", "devtext.txt")


def llama_run(model, threads, tokens, n_gen):
    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=512, n_batch=512,
                verbose=False, seed=0)
    llm.reset()
    llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
    llm.eval(tokens)
    generated = 0
    for _ in range(n_gen):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
        generated += 1
    perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
    prompt_tps = perf.n_p_eval / (perf.t_p_eval_ms / 1000) if perf.t_p_eval_ms > 0 else 0
    decode_tps = perf.n_eval / (perf.t_eval_ms / 1000) if perf.t_eval_ms > 0 else 0
    del llm
    return prompt_tps, decode_tps


def flexrun_run(binary, model, threads, prompt_file, n_gen):
    out = subprocess.run([binary, "--model", model, "--threads", str(threads), "--ctx", "512", "-n", str(n_gen),
                          "--temp", "0", "--stats", prompt_file], capture_output=True, text=True, check=True)
    prompt = re.search(r"prompt: (\d+) tokens in [\d.]+ s \(([\d.]+) tok/s\)", out.stderr)
    decode = re.search(r"decode: (\d+) tokens in [\d.]+ s \(([\d.]+) tok/s\)", out.stderr)
    return float(prompt.group(2)), float(decode.group(2)), int(prompt.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flexrun", required=True)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("--baseline", help="a second flexrun binary (e.g. main's), run in every pair right after the first: "
                    "its medians and the paired ratios flexrun / baseline are printed too")
    a = ap.parse_args()

    tok = Llama(model_path=a.model, vocab_only=True, verbose=False)
    short = "Explain what artificial intelligence is."
    # BOS as the model adds it (Gemma does, SmolLM2 does not): both engines then see the same ids.
    bos = len(tok.tokenize(b"", add_bos=True, special=True))
    short_ids = tok.tokenize(short.encode(), add_bos=True, special=True)
    text = open(DEVTEXT, encoding="utf-8").read()
    ids = tok.tokenize(text.encode(), add_bos=False, special=False)[:128 - bos]
    long_text = tok.detokenize(ids).decode("utf-8")
    long_ids = tok.tokenize(long_text.encode(), add_bos=True, special=False)
    assert len(long_ids) == 128, len(long_ids)
    tmp = tempfile.mkdtemp()
    short_file, long_file = os.path.join(tmp, "short.txt"), os.path.join(tmp, "long.txt")
    open(short_file, "w").write(short)
    open(long_file, "w").write(long_text)

    rows = {"decode": ([], []), "prefill": ([], [])}
    base = {"decode": [], "prefill": []}
    for i in range(a.pairs):
        # decode pair: llama.cpp then flexrun
        _, ld = llama_run(a.model, a.threads, short_ids, 64)
        _, fd, n = flexrun_run(a.flexrun, a.model, a.threads, short_file, 64)
        assert n == len(short_ids), (n, len(short_ids))
        rows["decode"][0].append(ld); rows["decode"][1].append(fd)
        if a.baseline:
            base["decode"].append(flexrun_run(a.baseline, a.model, a.threads, short_file, 64)[1])
        # prefill pair
        lp, _ = llama_run(a.model, a.threads, long_ids, 1)
        fp, _, n = flexrun_run(a.flexrun, a.model, a.threads, long_file, 1)
        assert n == 128, n
        rows["prefill"][0].append(lp); rows["prefill"][1].append(fp)
        if a.baseline:
            base["prefill"].append(flexrun_run(a.baseline, a.model, a.threads, long_file, 1)[0])
        extra = f" | baseline decode {base['decode'][-1]:.1f} prefill {base['prefill'][-1]:.1f}" if a.baseline else ""
        print(f"pair {i + 1}: decode llama.cpp {ld:.1f} flexrun {fd:.1f} | prefill llama.cpp {lp:.1f} flexrun {fp:.1f}{extra}", file=sys.stderr)

    print(f"\n{os.path.basename(a.model)}, {a.threads} threads, {a.pairs} pairs, llama-cpp-python {llama_cpp.__version__}\n")
    print("| figure | llama.cpp tok/s (median) | flexrun tok/s (median) | ratio flexrun/llama.cpp (median of pairs) | ratios per pair |")
    print("|---|---|---|---|---|")
    for name, label in (("decode", "decode, 64 tokens after a 6-token prompt"), ("prefill", "prefill, 128-token prompt")):
        l, f = rows[name]
        ratios = [fi / li for fi, li in zip(f, l)]
        print(f"| {label} | {statistics.median(l):.1f} | {statistics.median(f):.1f} | {statistics.median(ratios):.2f} | "
              + " ".join(f"{r:.2f}" for r in ratios) + " |")
    if a.baseline:
        print(f"\nbaseline {a.baseline}, run right after flexrun in each pair\n")
        print("| figure | baseline tok/s (median) | baseline/llama.cpp (median of pairs) | flexrun/baseline (median of pairs) | flexrun/baseline per pair |")
        print("|---|---|---|---|---|")
        for name in ("decode", "prefill"):
            l, f = rows[name]
            b = base[name]
            bl = [bi / li for bi, li in zip(b, l)]
            fb = [fi / bi for fi, bi in zip(f, b)]
            print(f"| {name} | {statistics.median(b):.1f} | {statistics.median(bl):.2f} | {statistics.median(fb):.2f} | "
                  + " ".join(f"{r:.2f}" for r in fb) + " |")
    if a.json:
        json.dump({"engines": rows, "baseline": base}, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
