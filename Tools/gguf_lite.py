"""A small GGUF (v2/v3) reader and writer for the tools: metadata, tensor infos and raw tensor
bytes. Standard library only (the writer takes bytes, however they were made)."""
import struct

TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
              10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 30: "BF16"}
# (elements, bytes) per block
BLOCKS = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
          12: (256, 144), 13: (256, 176), 14: (256, 210), 30: (1, 2)}
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class GGUF:
    """Parsed header of a GGUF file: `metadata` (key → value), `tensors` (name → (shape, type,
    absolute offset, byte count)) in file order."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.buf = f.read()
        b, at = self.buf, 0
        magic, version, nt, nkv = struct.unpack_from("<IIQQ", b, 0)
        assert magic == 0x46554747 and version in (2, 3), f"{path}: not a GGUF v2/v3"
        at = 24

        def string():
            nonlocal at
            n = struct.unpack_from("<Q", b, at)[0]
            s = b[at + 8:at + 8 + n].decode("utf-8", "replace")
            at += 8 + n
            return s

        def value(t):
            nonlocal at
            if t == 8:
                return string()
            if t == 9:
                et, n = struct.unpack_from("<IQ", b, at)
                at += 12
                return [value(et) for _ in range(n)]
            fmt = _SCALARS[t]
            v = struct.unpack_from(fmt, b, at)[0]
            at += struct.calcsize(fmt)
            return v

        self.metadata = {}
        for _ in range(nkv):
            k = string()
            t = struct.unpack_from("<I", b, at)[0]
            at += 4
            self.metadata[k] = value(t)
        infos = []
        for _ in range(nt):
            name = string()
            nd = struct.unpack_from("<I", b, at)[0]
            shape = list(struct.unpack_from(f"<{nd}Q", b, at + 4))
            t, off = struct.unpack_from("<IQ", b, at + 4 + 8 * nd)
            at += 4 + 8 * nd + 12
            infos.append((name, shape, t, off))
        align = self.metadata.get("general.alignment", 32)
        data = (at + align - 1) // align * align
        self.tensors = {}
        for name, shape, t, off in infos:
            qk, size = BLOCKS[t]
            rows = 1
            for d in shape[1:]:
                rows *= d
            self.tensors[name] = (shape, t, data + off, shape[0] // qk * size * rows)

    def data(self, name):
        shape, t, off, n = self.tensors[name]
        return self.buf[off:off + n]

    def census(self, matrices_only=True):
        c = {}
        for shape, t, _, _ in self.tensors.values():
            if len(shape) >= 2 or not matrices_only:
                c[TYPE_NAMES.get(t, str(t))] = c.get(TYPE_NAMES.get(t, str(t)), 0) + 1
        return c


def write(path, metadata, tensors, align=32):
    """Writes a GGUF v3. `metadata`: list of (key, gguf type id, value) where arrays are
    (9, (element type, list)); `tensors`: list of (name, shape in ggml order, type id, bytes)."""
    def s(x):
        e = x.encode()
        return struct.pack("<Q", len(e)) + e

    def val(t, v):
        if t == 8:
            return s(v)
        if t == 9:
            et, items = v
            return struct.pack("<IQ", et, len(items)) + b"".join(val(et, i) for i in items)
        return struct.pack(_SCALARS[t], v)

    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for k, t, v in metadata:
        out += s(k) + struct.pack("<I", t) + val(t, v)
    at, offsets = 0, []
    for name, shape, t, data in tensors:
        out += s(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", t, at)
        offsets.append(at)
        at = (at + len(data) + align - 1) // align * align
    out += b"\0" * (-len(out) % align)
    with open(path, "wb") as f:
        f.write(out)
        for (name, shape, t, data), off in zip(tensors, offsets):
            f.seek(len(out) + off)
            f.write(data)
        f.truncate(len(out) + at)
