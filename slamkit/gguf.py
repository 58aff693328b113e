"""Read a GGUF file's header, metadata and tensor infos without touching the weights.

Pure Python (``struct`` over an ``mmap``): only the pages holding the header are read, so
inspecting a multi-GB file is cheap. Supports GGUF v2 and v3 (either byte order) and every
metadata value type, arrays (also nested) included.

>>> from slamkit.catalog import smollm2_path
>>> h = read_gguf(smollm2_path())            # doctest: +SKIP
>>> h.metadata["general.architecture"], h.n_params   # doctest: +SKIP
('llama', 134515008)
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slamkit.errors import GGUFError, ModelNotFoundError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
# Sanity limits: anything above these is corruption, not a real model.
MAX_TENSORS = 1 << 20
MAX_KV = 1 << 20
MAX_ARRAY_DEPTH = 8

#: ggml tensor type id -> (name, block size in elements, bytes per block); llama.cpp ggml.h.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
    42: ("Q2_0", 64, 18),
}

# Metadata value types (gguf spec): id -> struct format of one scalar; 8 string, 9 array.
_SCALAR_FMT = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9
VALUE_TYPE_NAMES = {
    0: "UINT8", 1: "INT8", 2: "UINT16", 3: "INT16", 4: "UINT32", 5: "INT32", 6: "FLOAT32",
    7: "BOOL", 8: "STRING", 9: "ARRAY", 10: "UINT64", 11: "INT64", 12: "FLOAT64",
}  # fmt: skip


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's description from the header (its data is never read)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    offset: int  # relative to the start of the tensor data section

    @property
    def type_name(self) -> str:
        return GGML_TYPES[self.type_id][0]

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        _, block, size = GGML_TYPES[self.type_id]
        return self.n_elements // block * size


@dataclass
class GGUFHeader:
    """Everything in a GGUF file except the weights."""

    path: Path
    version: int
    byte_order: str  # "little" or "big"
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    alignment: int
    data_offset: int  # absolute offset of the tensor data section
    file_size: int
    value_types: dict[str, str] = field(default_factory=dict)  # key -> GGUF value type name

    @property
    def n_params(self) -> int:
        """Parameter count: the sum of every tensor's element count."""
        return sum(t.n_elements for t in self.tensors)

    @property
    def tensor_types(self) -> dict[str, int]:
        """``{ggml type name: number of tensors}`` actually stored in the file."""
        return dict(sorted(Counter(t.type_name for t in self.tensors).items()))

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")


class _Reader:
    """Bounds-checked little/big-endian reader over a buffer; errors name the path."""

    def __init__(self, buf: Any, path: Path, size: int, endian: str = "<") -> None:
        self.buf, self.path, self.size, self.e, self.pos = buf, path, size, endian, 0
        self.where = "header"

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(f"{self.path}: {problem}")

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(
                f"truncated: the file ends at byte {self.size:,} inside the {self.where} "
                f"(needed {n:,} more bytes at offset {self.pos:,}). The file was probably cut "
                "short by an interrupted download or copy; fetch it again."
            )

    def unpack(self, fmt: str) -> Any:
        st = struct.Struct(self.e + fmt)
        self.need(st.size)
        (value,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return value

    def u32(self) -> int:
        return int(self.unpack("I"))

    def u64(self) -> int:
        return int(self.unpack("Q"))

    def string(self) -> str:
        n = self.u64()
        if n > self.size:
            raise self.fail(
                f"corrupt: a string in the {self.where} at offset {self.pos - 8:,} claims "
                f"{n:,} bytes, more than the whole file ({self.size:,} bytes)"
            )
        self.need(n)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def strings(self, count: int) -> list[str]:
        """A string array (vocabularies: 10^5 entries), with the bounds checks inlined."""
        buf, size, pos = self.buf, self.size, self.pos
        out: list[str] = []
        u64 = struct.Struct(self.e + "Q").unpack_from
        append = out.append
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                self.need(8)
            (n,) = u64(buf, pos)
            pos += 8
            if pos + n > size:
                self.pos = pos
                if n > size:
                    raise self.fail(f"corrupt: a string in the {self.where} claims {n:,} bytes")
                self.need(n)
            append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out

    def value(self, vtype: int, depth: int = 0) -> Any:
        fmt = _SCALAR_FMT.get(vtype)
        if fmt is not None:
            return self.unpack(fmt)
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_ARRAY_DEPTH:
                raise self.fail(f"corrupt: arrays nested deeper than {MAX_ARRAY_DEPTH}")
            etype = self.u32()
            count = self.u64()
            if count > self.size:
                raise self.fail(
                    f"corrupt: an array in the {self.where} claims {count:,} elements, more "
                    f"than the file has bytes ({self.size:,})"
                )
            efmt = _SCALAR_FMT.get(etype)
            if efmt is not None:  # fixed-size elements: one unpack for the whole array
                st = struct.Struct(f"{self.e}{count}{efmt}")
                self.need(st.size)
                out = list(st.unpack_from(self.buf, self.pos))
                self.pos += st.size
                return out
            if etype == _STRING:
                return self.strings(count)
            if etype != _ARRAY:
                raise self.fail(f"corrupt: unknown array element type {etype} in the {self.where}")
            return [self.value(etype, depth + 1) for _ in range(count)]
        raise self.fail(
            f"corrupt: unknown metadata value type {vtype} at offset {self.pos - 4:,} "
            f"in the {self.where}"
        )


def _not_gguf(path: Path, head: bytes) -> GGUFError:
    if head[:4] in (b"lmgg", b"fmgg", b"tjgg", b"ggml", b"ggmf", b"ggjt"):
        what = "a legacy GGML/GGJT model, which llama.cpp no longer reads; convert it to GGUF"
    elif head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        what = f"it looks like a text file (starts with {head[:16]!r})"
    else:
        what = f"it starts with {head[:4]!r}"
    return GGUFError(
        f"{path}: not a GGUF model file (the first 4 bytes must be b'GGUF'; {what}). "
        "Point slamkit at a .gguf file produced by llama.cpp's converter or quantizer."
    )


def read_gguf(path: str | Path, check_data: bool = True) -> GGUFHeader:
    """Parse header, metadata and tensor infos of ``path``; never reads the weights.

    Raises ModelNotFoundError for a missing path and GGUFError (naming the path and the
    problem) for a non-GGUF, truncated or corrupt file. With ``check_data`` the file size
    must also cover all tensor data the tensor infos describe.
    """
    path = Path(path)
    if not path.exists():
        raise ModelNotFoundError(f"{path}: no such model file. Check the path (or the glob).")
    if path.is_dir():
        raise GGUFError(f"{path}: is a directory, not a GGUF file; pass a folder with --glob.")
    size = path.stat().st_size
    if size == 0:
        raise GGUFError(f"{path}: not a GGUF model file (the file is empty, 0 bytes).")
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(mm, path, size, check_data)
    except OSError as exc:
        raise GGUFError(f"{path}: cannot read the file ({exc.strerror or exc}).") from None


def _parse(buf: Any, path: Path, size: int, check_data: bool) -> GGUFHeader:
    head = bytes(buf[:16])
    if head[:4] != GGUF_MAGIC:
        raise _not_gguf(path, head)
    r = _Reader(buf, path, size)
    r.pos = 4
    r.where = "header"
    version = r.u32()
    byte_order = "little"
    if version not in SUPPORTED_VERSIONS and version & 0xFFFF == 0:
        swapped = struct.unpack(">I", struct.pack("<I", version))[0]
        if swapped in SUPPORTED_VERSIONS:
            r.e, version, byte_order = ">", swapped, "big"
    if version not in SUPPORTED_VERSIONS:
        hint = " (GGUF v1 is obsolete; re-convert the model)" if version == 1 else ""
        raise GGUFError(
            f"{path}: unsupported or corrupt GGUF version {version}{hint}; slamkit reads "
            f"versions {', '.join(map(str, SUPPORTED_VERSIONS))}."
        )
    n_tensors, n_kv = r.u64(), r.u64()
    # every tensor info needs >= 24 bytes and every KV >= 12, so bigger counts are corrupt
    if n_tensors > MAX_TENSORS or n_tensors * 24 > size:
        raise r.fail(f"corrupt: the header claims {n_tensors:,} tensors (absurd for this file)")
    if n_kv > MAX_KV or n_kv * 12 > size:
        raise r.fail(f"corrupt: the header claims {n_kv:,} metadata entries (absurd)")

    metadata: dict[str, Any] = {}
    vtypes: dict[str, str] = {}
    for i in range(n_kv):
        r.where = f"metadata (entry {i + 1} of {n_kv})"
        key = r.string()
        vtype = r.u32()
        r.where = f"metadata (entry {i + 1} of {n_kv}, key {key!r})"
        metadata[key] = r.value(vtype)
        vtypes[key] = VALUE_TYPE_NAMES.get(vtype, str(vtype))

    tensors: list[TensorInfo] = []
    for i in range(n_tensors):
        r.where = f"tensor infos (tensor {i + 1} of {n_tensors})"
        name = r.string()
        n_dims = r.u32()
        if not 1 <= n_dims <= MAX_DIMS:
            raise r.fail(f"corrupt: tensor {name!r} claims {n_dims} dimensions (1-{MAX_DIMS})")
        shape = tuple(r.u64() for _ in range(n_dims))
        type_id = r.u32()
        offset = r.u64()
        if type_id not in GGML_TYPES:
            raise r.fail(f"corrupt or unsupported: tensor {name!r} has unknown ggml type {type_id}")
        block = GGML_TYPES[type_id][1]
        if any(d > size * 64 for d in shape) or shape[0] % block:
            raise r.fail(
                f"corrupt: tensor {name!r} has shape {shape}, impossible for type "
                f"{GGML_TYPES[type_id][0]} in a {size:,}-byte file"
            )
        tensors.append(TensorInfo(name, shape, type_id, offset))

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise r.fail(f"corrupt: general.alignment is {alignment!r}, not a power of two")
    data_offset = -(-r.pos // alignment) * alignment

    if check_data and tensors:
        end = 0
        for t in tensors:
            if t.offset % alignment:
                raise r.fail(
                    f"corrupt: tensor {t.name!r} data offset {t.offset} is not a multiple of the "
                    f"alignment {alignment}"
                )
            end = max(end, t.offset + t.n_bytes)
        needed = data_offset + end
        if needed > size:
            raise r.fail(
                f"truncated: the tensor infos describe {needed:,} bytes of file but it has only "
                f"{size:,} ({needed - size:,} bytes of tensor data missing). The file was cut "
                "short (interrupted download, copy or quantization); fetch or build it again."
            )
    return GGUFHeader(
        path=path,
        version=version,
        byte_order=byte_order,
        metadata=metadata,
        tensors=tensors,
        alignment=alignment,
        data_offset=data_offset,
        file_size=size,
        value_types=vtypes,
    )


def is_valid_gguf(path: str | Path) -> bool:
    """True when ``path`` exists and its header and size check out (used to resume)."""
    try:
        read_gguf(path)
    except (GGUFError, ModelNotFoundError):
        return False
    return True


#: approximate bits per weight of llama.cpp quantization names (for charts and tables)
_QUANT_BITS = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56,
    "Q5_1": 6.0, "Q5_0": 5.5, "Q5_K_M": 5.67, "Q5_K_S": 5.52, "Q4_1": 5.0,
    "Q4_0": 4.5, "Q4_K_M": 4.83, "Q4_K_S": 4.57, "IQ4_NL": 4.5, "IQ4_XS": 4.25,
    "Q3_K_L": 4.27, "Q3_K_M": 3.91, "Q3_K_S": 3.5, "IQ3_M": 3.66, "IQ3_XXS": 3.06,
    "Q2_K": 3.35, "Q2_K_S": 2.96, "IQ2_M": 2.7, "IQ2_XS": 2.31, "IQ1_S": 1.56,
}  # fmt: skip


def quant_bits(quant: str | None) -> float:
    """Approximate bits per weight of a llama.cpp quantization name (NaN when unknown)."""
    if not quant:
        return float("nan")
    return _QUANT_BITS.get(str(quant).upper(), float("nan"))
