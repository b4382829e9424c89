#!/usr/bin/env python3
"""Wraps the F32/F16/BF16 tensors of a .safetensors file in a GGUF (version 3), unchanged, so
`flexrun pack --requant` can measure how real trained weights compress. The GGUF only carries
`general.architecture` (from --arch) and `general.name`; flexrun cannot run it as a model (there is
no tokenizer), but `pack` reads any GGUF. Standard library only.

    python3 Tools/safetensors_to_gguf.py model.safetensors out.gguf [--arch bert]
"""
import argparse, json, os, struct, sys

TYPES = {"F32": (0, 4), "F16": (1, 2), "BF16": (30, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--arch", default="unknown")
    a = ap.parse_args()
    with open(a.src, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        tensors = [(k, v) for k, v in header.items() if k != "__metadata__"]
        for k, v in tensors:
            if v["dtype"] not in TYPES:
                print(f"safetensors_to_gguf: skipping {k} ({v['dtype']}): only F32, F16 and BF16 are weights", file=sys.stderr)
        tensors = [(k, v) for k, v in tensors if v["dtype"] in TYPES]
        def s(x):
            b = x.encode()
            return struct.pack("<Q", len(b)) + b
        out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), 2))
        out += s("general.architecture") + struct.pack("<I", 8) + s(a.arch)
        out += s("general.name") + struct.pack("<I", 8) + s(os.path.basename(a.src))
        offsets, at = [], 0
        for k, v in tensors:
            shape = list(reversed(v["shape"])) or [1]          # ggml order: innermost first
            start, end = v["data_offsets"]
            out += s(k) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
            out += struct.pack("<IQ", TYPES[v["dtype"]][0], at)
            offsets.append((start, end, at))
            at = (at + end - start + 31) // 32 * 32
        out += b"\0" * (-len(out) % 32)
        tmp = a.dst + f".partial-{os.getpid()}"
        try:
            with open(tmp, "wb") as o:
                o.write(out)
                data_start = len(out)
                for start, end, off in offsets:
                    f.seek(base + start)
                    o.seek(data_start + off)
                    o.write(f.read(end - start))
                o.truncate(data_start + at)
            os.replace(tmp, a.dst)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    print(f"{a.dst}: {len(tensors)} tensors")


if __name__ == "__main__":
    main()
