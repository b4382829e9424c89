#!/usr/bin/env python3
"""Writes Tests/FlexKernelsTests/Fixtures/ggml-quants.bin: seeded floats and the blocks ggml's own
reference quantizers (quantize_row_*_ref, from the peer llama-cpp-python's libggml-base) make of
them, so QuantizeTests can check FlexRun's quantizers bit for bit without llama.cpp installed.

Regenerate (needs the peer venv, Tools/peer-venv.sh):
    "$(bash Tools/peer-venv.sh)" Tools/kquant_fixture.py

Layout (little-endian): b"GGQF", u32 float count N, N f32; then per type: u32 ggml type id,
u32 byte count, the blocks.
"""
import ctypes
import pathlib
import struct
import sys

import llama_cpp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests/FlexKernelsTests/Fixtures/ggml-quants.bin"

# ggml type id -> (C function, block elements, block bytes)
TYPES = {
    2: ("quantize_row_q4_0_ref", 32, 18),
    3: ("quantize_row_q4_1_ref", 32, 20),
    6: ("quantize_row_q5_0_ref", 32, 22),
    7: ("quantize_row_q5_1_ref", 32, 24),
    8: ("quantize_row_q8_0_ref", 32, 34),
    12: ("quantize_row_q4_K_ref", 256, 144),
    13: ("quantize_row_q5_K_ref", 256, 176),
    14: ("quantize_row_q6_K_ref", 256, 210),
}


def inputs() -> np.ndarray:
    """48 super-blocks of 256 in regimes that take every branch of the quantizers."""
    rng = np.random.default_rng(20240521)
    blocks = []
    for scale in (1.0, 0.02, 3e-4, 40.0):                      # trained-weight-like, several scales
        blocks += [rng.laplace(0, scale, 256) for _ in range(6)]
        blocks += [rng.normal(0, scale, 256) for _ in range(3)]
    blocks.append(np.zeros(256))                                 # all zero
    blocks.append(np.full(256, 0.75))                            # constant (max == min)
    blocks.append(rng.uniform(0.5, 2.0, 256))                    # all positive: min clamps to 0
    blocks.append(-rng.uniform(0.5, 2.0, 256))                   # all negative
    b = rng.normal(0, 0.01, 256); b[17] = 3.0; b[200] = -5.0     # outliers
    blocks.append(b)
    b = rng.normal(0, 1.0, 256); b[:32] = 0; b[128:160] = 1e-3   # a zero and a tiny sub-block
    blocks.append(b)
    blocks.append(rng.normal(0, 1e-17, 256))                     # below GROUP_MAX_EPS
    blocks.append(np.round(rng.normal(0, 4, 256)) / 4)           # on a grid: ties in rounding
    while len(blocks) < 48:
        blocks.append(rng.standard_t(3, 256) * 0.05)             # heavy tails
    return np.concatenate(blocks).astype(np.float32)


def main() -> int:
    lib = ctypes.CDLL(str(pathlib.Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    x = inputs()
    out = bytearray(b"GGQF" + struct.pack("<I", x.size) + x.tobytes())
    src = x.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    for tid, (fn, qk, size) in TYPES.items():
        dst = ctypes.create_string_buffer(x.size // qk * size)
        f = getattr(lib, fn)
        f.argtypes = [ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int64]
        f.restype = None
        f(src, dst, x.size)
        out += struct.pack("<II", tid, len(dst.raw)) + dst.raw
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(bytes(out))
    print(f"{OUT.relative_to(ROOT)}: {x.size} floats, {len(TYPES)} types, {len(out)} bytes "
          f"(llama-cpp-python {llama_cpp.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
