#!/usr/bin/env python3
"""K-quant test models, each made twice, by llama.cpp's quantizer and by `flexrun pack --requant
--gguf`, compared tensor by tensor, and run by both engines. Run by the peer venv's python
(Tools/kquant_models.sh does that); models go to ~/.cache/flexrun/models (never committed).

1. SmolLM2-135M Q4_K_M (and Q5_K_M, Q6_K: --smollm2) from the default Q4_1 model (llama.cpp
   requantizes with allow_requantize): SmolLM2-135M-Instruct.Q4_K_M.{llamacpp,flexrun}.gguf, ….
2. A synthetic llama with 7B widths (n_embd 4096, n_ff 11008, 32 heads, --layers blocks, seeded
   random F16 weights, SmolLM2's tokenizer cut to its first 1024 tokens), in Q4_K_M and Q6_K:
   synth7b-L{layers}.{Q4_K_M,Q6_K}.{llamacpp,flexrun}.gguf, for speed comparisons on one file.

For each pair it prints both tensor-type censuses and, per type, how many tensors are identical
byte for byte (both quantize with ggml's reference quantizers from the same floats, so all should
be), then greedy tokens from FlexRun and llama.cpp on each file.
"""
import argparse
import ctypes
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import gguf_lite  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
FTYPES = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}
PROMPT = "The capital of France is"


_QUIET = None


def quiet_llamacpp():
    """Drops llama.cpp's per-tensor log lines (kept alive: ctypes callbacks must not be freed)."""
    global _QUIET
    import llama_cpp
    if _QUIET is None:
        _QUIET = llama_cpp.llama_log_callback(lambda level, text, data: None)
        llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p(0))


def llamacpp_quantize(src, dst, ftype, threads):
    import llama_cpp
    quiet_llamacpp()
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.allow_requantize = True
    p.nthread = threads
    t0 = time.time()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"kquant_models: llama_model_quantize failed ({rc}) on {src}")
    print(f"  llama.cpp  -> {dst.name} ({time.time() - t0:.1f} s)")


def flexrun_quantize(flexrun, src, dst, recipe):
    t0 = time.time()
    r = subprocess.run([flexrun, "pack", str(src), "--requant", recipe, "--gguf", "-o", str(dst)],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if r.returncode != 0:
        sys.exit(f"kquant_models: flexrun pack failed on {src}:\n{r.stdout}")
    print(f"  FlexRun    -> {dst.name} ({time.time() - t0:.1f} s)")


def compare(a_path, b_path):
    """Prints both censuses and identical tensors per type; returns (identical, comparable)."""
    a, b = gguf_lite.GGUF(a_path), gguf_lite.GGUF(b_path)
    fmt = lambda c: ", ".join(f"{n} {k}" for k, n in sorted(c.items(), key=lambda kv: -kv[1]))
    print(f"  census llama.cpp: {fmt(a.census())}   (file type {a.metadata.get('general.file_type')})")
    print(f"  census FlexRun:   {fmt(b.census())}   (file type {b.metadata.get('general.file_type')})")
    same_type, same, differ = 0, {}, []
    for name, (shape, t, _, _) in a.tensors.items():
        if name not in b.tensors or len(shape) < 2:
            continue
        if b.tensors[name][1] != t:
            differ.append(f"{name}: {gguf_lite.TYPE_NAMES[t]} vs {gguf_lite.TYPE_NAMES[b.tensors[name][1]]}")
            continue
        same_type += 1
        k = gguf_lite.TYPE_NAMES[t]
        hit = a.data(name) == b.data(name)
        same.setdefault(k, [0, 0])
        same[k][0] += hit
        same[k][1] += 1
    if differ:
        print(f"  type differs on {len(differ)} tensors: " + "; ".join(differ[:5]))
    print("  identical bytes: " + ", ".join(f"{k} {n}/{m}" for k, (n, m) in sorted(same.items())))
    print(f"  whole files identical: {'yes' if a.buf == b.buf else 'no'}")
    return sum(n for n, _ in same.values()), same_type


def run_both(flexrun, path, tokens, threads):
    import llama_cpp
    t0 = time.time()
    r = subprocess.run([flexrun, "--model", str(path), "-n", str(tokens), "--temp", "0", "--ignore-eos",
                        "--print-ids", "--threads", str(threads), "-"],
                       input=PROMPT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ids = [l for l in r.stderr.splitlines() if "ids" in l.lower()]
    status = "ok" if r.returncode == 0 else f"exit {r.returncode}: {r.stderr.strip()[-300:]}"
    print(f"  FlexRun   {status}, {time.time() - t0:.1f} s: {r.stdout!r} {ids[-1] if ids else ''}")
    t0 = time.time()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, n_threads=threads, verbose=False)
    toks = llm.tokenize(PROMPT.encode(), add_bos=llm.metadata.get("tokenizer.ggml.add_bos_token") == "true")
    out = []
    for t in llm.generate(toks, temp=0.0, top_k=1):
        out.append(t)
        if len(out) == tokens:
            break
    print(f"  llama.cpp ok, {time.time() - t0:.1f} s: {llm.detokenize(out).decode(errors='replace')!r} ids {out}")
    del llm


def synth_base(models, layers, seed):
    """An F16 llama with 7B widths and a real (cut) tokenizer; seeded, so it is the same file
    every time."""
    path = models / f"synth7b-L{layers}.F16.gguf"
    if path.exists():
        return path
    src = gguf_lite.GGUF(models / "SmolLM2-135M-Instruct.Q4_1.gguf").metadata
    vocab, merges = 1024, 772  # SmolLM2's merges 0…771 make exactly tokens 252…1023
    toks = src["tokenizer.ggml.tokens"][:vocab]
    meta = [("general.architecture", 8, "llama"), ("general.name", 8, f"synth7b-L{layers} (random, seed {seed})"),
            ("general.file_type", 4, 1),
            ("llama.block_count", 4, layers), ("llama.context_length", 4, 4096), ("llama.embedding_length", 4, 4096),
            ("llama.feed_forward_length", 4, 11008), ("llama.attention.head_count", 4, 32),
            ("llama.attention.head_count_kv", 4, 32), ("llama.rope.freq_base", 6, 10000.0),
            ("llama.attention.layer_norm_rms_epsilon", 6, 1e-5), ("llama.rope.dimension_count", 4, 128),
            ("llama.vocab_size", 4, vocab),
            ("tokenizer.ggml.model", 8, "gpt2"), ("tokenizer.ggml.pre", 8, "smollm"),
            ("tokenizer.ggml.tokens", 9, (8, toks)),
            ("tokenizer.ggml.token_type", 9, (5, src["tokenizer.ggml.token_type"][:vocab])),
            ("tokenizer.ggml.merges", 9, (8, src["tokenizer.ggml.merges"][:merges])),
            ("tokenizer.ggml.bos_token_id", 4, 1), ("tokenizer.ggml.eos_token_id", 4, 2),
            ("tokenizer.ggml.unknown_token_id", 4, 0), ("tokenizer.ggml.padding_token_id", 4, 2),
            ("tokenizer.ggml.add_bos_token", 7, False), ("tokenizer.ggml.add_space_prefix", 7, False),
            ("general.quantization_version", 4, 2)]
    rng = np.random.default_rng(seed)
    d, ff = 4096, 11008

    def w(rows, cols, std):  # ggml shape [cols, rows]: rows of `cols` elements
        return rng.standard_normal((rows, cols), dtype=np.float32).__imul__(std).astype(np.float16).tobytes()

    ones = np.ones(d, np.float32).tobytes()
    tensors = [("token_embd.weight", [d, vocab], 1, w(vocab, d, 0.02)),
               ("output_norm.weight", [d], 0, ones),
               ("output.weight", [d, vocab], 1, w(vocab, d, 0.02))]
    for l in range(layers):
        p = f"blk.{l}."
        tensors += [(p + "attn_norm.weight", [d], 0, ones),
                    (p + "attn_q.weight", [d, d], 1, w(d, d, 0.02)),
                    (p + "attn_k.weight", [d, d], 1, w(d, d, 0.02)),
                    (p + "attn_v.weight", [d, d], 1, w(d, d, 0.02)),
                    (p + "attn_output.weight", [d, d], 1, w(d, d, 0.02)),
                    (p + "ffn_norm.weight", [d], 0, ones),
                    (p + "ffn_gate.weight", [d, ff], 1, w(ff, d, 0.02)),
                    (p + "ffn_up.weight", [d, ff], 1, w(ff, d, 0.02)),
                    (p + "ffn_down.weight", [ff, d], 1, w(d, ff, 0.02))]
    tmp = path.with_suffix(f".partial-{os.getpid()}")
    gguf_lite.write(tmp, meta, tensors)
    os.replace(tmp, path)
    print(f"  wrote {path.name} ({path.stat().st_size / 2**20:.0f} MiB)")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flexrun", default=str(ROOT / ".build/release/flexrun"))
    ap.add_argument("--models", default=os.environ.get("FLEXRUN_MODELS", str(pathlib.Path.home() / ".cache/flexrun/models")))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--tokens", type=int, default=8, help="greedy tokens each engine generates per file")
    ap.add_argument("--layers", type=int, default=2, help="blocks of the synthetic 7B-width model")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--smollm2", default="q4_k_m,q5_k_m,q6_k", help="SmolLM2 recipes to make (of %s)" % ", ".join(FTYPES))
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--skip-synth", action="store_true")
    ap.add_argument("--keep-f16", action="store_true", help="keep the synthetic model's F16 source")
    ap.add_argument("--no-run", action="store_true", help="make and compare the files only")
    a = ap.parse_args()
    models = pathlib.Path(a.models)
    pairs = []
    if not a.skip_smollm2:
        src = models / "SmolLM2-135M-Instruct.Q4_1.gguf"
        for recipe in a.smollm2.split(","):
            tag = recipe.upper()
            print(f"SmolLM2 {tag} from {src.name}")
            peer, ours = (models / f"SmolLM2-135M-Instruct.{tag}.{who}.gguf" for who in ("llamacpp", "flexrun"))
            llamacpp_quantize(src, peer, FTYPES[recipe], a.threads)
            flexrun_quantize(a.flexrun, src, ours, recipe)
            compare(peer, ours)
            pairs.append((peer, ours))
    if not a.skip_synth:
        print(f"synthetic 7B-width llama, {a.layers} layers")
        base = synth_base(models, a.layers, a.seed)
        for recipe in ("q4_k_m", "q6_k"):
            tag = recipe.upper()
            peer, ours = (models / f"synth7b-L{a.layers}.{tag}.{who}.gguf" for who in ("llamacpp", "flexrun"))
            print(f" {tag}")
            llamacpp_quantize(base, peer, FTYPES[recipe], a.threads)
            flexrun_quantize(a.flexrun, base, ours, recipe)
            compare(peer, ours)
            pairs.append((peer, ours))
        if not a.keep_f16:
            base.unlink()
    if not a.no_run:
        for peer, ours in pairs:
            for path in (peer, ours):
                print(f"run {path.name}")
                run_both(a.flexrun, path, a.tokens, a.threads)


if __name__ == "__main__":
    main()
