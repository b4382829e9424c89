"""llama.cpp's perplexity of a text on any GGUF, through llama-cpp-python, with llama-perplexity's
procedure (DESIGN.md section 5), so a file's number compares with `flexrun perplexity` on it:

- tokenize the whole text once, BOS only if the model adds one;
- floor(N / n_ctx) non-overlapping chunks, the first token of each replaced by BOS if it adds one;
- each chunk evaluated from an empty cache, positions n_ctx/2 ... n_ctx-2 scored (next-token NLL);
- PPL = exp(mean NLL), with llama-perplexity's standard error.

Checked against llama-perplexity itself: on the default model at n_ctx 512 it must print the
fixture's 26.4627 (fixtures/smollm2/perplexity.json).
Run with the peer venv's python:  "$(bash Tools/peer-venv.sh)" Tools/peer_perplexity.py --model FILE [--ctx 512]
"""
import argparse, json, math, os, sys

import numpy as np
from llama_cpp import Llama

HERE = os.path.dirname(os.path.abspath(__file__))
DEVTEXT = os.path.join(HERE, "..", "..", "shared", "fixtures", "text", "devtext.txt")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", default=DEVTEXT)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a line")
    a = ap.parse_args()
    llm = Llama(model_path=a.model, n_ctx=a.ctx, n_batch=a.ctx, n_threads=a.threads, n_threads_batch=a.threads,
                logits_all=True, verbose=False)
    text = open(a.text, encoding="utf-8").read()
    add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else False
    tokens = llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=False)
    n = a.ctx
    chunks = len(tokens) // n
    if chunks == 0:
        sys.exit(f"peer_perplexity: {len(tokens)} tokens is less than one chunk of {n}")
    nlls = []
    for c in range(chunks):
        chunk = list(tokens[c * n:(c + 1) * n])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.reset()
        llm.eval(chunk)
        logits = np.asarray(llm.scores[:n], dtype=np.float64)
        for j in range(n // 2, n - 1):
            row = logits[j]
            m = row.max()
            lse = m + math.log(np.exp(row - m).sum())
            nlls.append(lse - row[chunk[j + 1]])
        print(f"\rpeer_perplexity: chunk {c + 1}/{chunks}, ppl so far {math.exp(sum(nlls) / len(nlls)):.4f}", end="", file=sys.stderr)
    print(file=sys.stderr)
    mean = sum(nlls) / len(nlls)
    var = sum((x - mean) ** 2 for x in nlls) / (len(nlls) - 1)
    ppl = math.exp(mean)
    err = ppl * math.sqrt(var / len(nlls))
    if a.json:
        print(json.dumps({"model": os.path.basename(a.model), "ctx": n, "chunks": chunks, "tokens": len(tokens), "ppl": ppl, "stderr": err}))
    else:
        print(f"llama.cpp perplexity: {ppl:.4f} ± {err:.4f} ({chunks} chunks of {n}, {len(tokens)} tokens)")


if __name__ == "__main__":
    main()
