"""llama.cpp decoding N sequences in parallel (llama-cpp-python's low-level batch API): the
peer of `flexrun --parallel N`.

Each prompt becomes its own sequence (seq_id i). The prompts are evaluated first (one batch,
logits only for each prompt's last token), then every step decodes one greedy token of every
sequence in one llama_decode call, as llama.cpp's `llama-batched` example does. Prints one JSON
object: aggregate decode tok/s over the timed decode steps (llama_decode time only: sampling in
Python is not counted against the peer), prompt time, tokens, peak RSS, and every sequence's ids.

Used by Tools/batch-compare.sh (in memory) and Tools/sweep.py --batch (under caps).
"""
import argparse, ctypes, json, resource, sys, time

import numpy as np
import llama_cpp


@llama_cpp.llama_log_callback
def _quiet(level, text, user_data):
    pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompts", required=True, help="one prompt per line")
    ap.add_argument("--parallel", type=int, required=True, help="sequences decoded together (the first N prompts)")
    ap.add_argument("-n", type=int, default=128, help="tokens to generate per sequence (EOS ignored)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512, help="context per sequence")
    ap.add_argument("--mmap", type=int, default=1)
    a = ap.parse_args()

    # llama.cpp's loader logs pages of detail on stderr; the sweep wants one JSON line.
    llama_cpp.llama_log_set(_quiet, ctypes.c_void_p())
    prompts = [l for l in open(a.prompts, encoding="utf-8").read().split("\n") if l.strip()][: a.parallel]
    n_seq = len(prompts)
    llama_cpp.llama_backend_init()
    mp = llama_cpp.llama_model_default_params()
    mp.use_mmap = bool(a.mmap)
    t_load = time.perf_counter()
    model = llama_cpp.llama_model_load_from_file(a.model.encode(), mp)
    if not model:
        sys.exit("batch_peer: cannot load " + a.model)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    def tokenize(text):
        raw = text.encode()
        buf = (llama_cpp.llama_token * (len(raw) + 8))()
        n = llama_cpp.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, True)
        return list(buf[:n])

    seqs = [tokenize(p) for p in prompts]
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = a.ctx * n_seq
    total_prompt = sum(len(s) for s in seqs)
    cp.n_batch = max(total_prompt, n_seq)
    cp.n_ubatch = cp.n_batch
    cp.n_seq_max = n_seq
    cp.n_threads = a.threads
    cp.n_threads_batch = a.threads
    ctx = llama_cpp.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit("batch_peer: cannot create a context")
    load_s = time.perf_counter() - t_load

    batch = llama_cpp.llama_batch_init(max(total_prompt, n_seq), 0, n_seq)

    def fill(rows):
        for i, (tok, pos, seq, logits) in enumerate(rows):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if logits else 0
        batch.n_tokens = len(rows)

    def argmax(i):
        p = llama_cpp.llama_get_logits_ith(ctx, i)
        return int(np.argmax(np.ctypeslib.as_array(p, shape=(n_vocab,))))

    rows = []
    for s, toks in enumerate(seqs):
        for j, t in enumerate(toks):
            rows.append((t, j, s, j == len(toks) - 1))
    fill(rows)
    t0 = time.perf_counter()
    if llama_cpp.llama_decode(ctx, batch) != 0:
        sys.exit("batch_peer: prompt decode failed")
    prompt_s = time.perf_counter() - t0
    last = []
    k = 0
    for s, toks in enumerate(seqs):
        k += len(toks)
        last.append(k - 1)
    nxt = [argmax(i) for i in last]
    ids = [[t] for t in nxt]
    pos = [len(s) for s in seqs]
    decode_s = 0.0
    steps = 0
    for _ in range(a.n - 1):
        fill([(nxt[s], pos[s], s, True) for s in range(n_seq)])
        t0 = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            sys.exit("batch_peer: decode failed")
        decode_s += time.perf_counter() - t0
        steps += 1
        nxt = [argmax(s) for s in range(n_seq)]
        for s in range(n_seq):
            ids[s].append(nxt[s])
            pos[s] += 1
    llama_cpp.llama_batch_free(batch)
    out = {
        "sequences": n_seq, "generated_per_sequence": a.n, "prompt_tokens": total_prompt,
        "load_s": load_s, "prompt_s": prompt_s, "decode_s": decode_s,
        "aggregate_decode_tps": n_seq * steps / decode_s if decode_s > 0 else 0,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ids": ids,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
