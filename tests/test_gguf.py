"""The pure-Python GGUF header reader: real files, synthetic files, and bad inputs."""

from __future__ import annotations

import random
import struct
from pathlib import Path
from typing import Any

import pytest
from helpers import TENSORS, write_gguf

from slamkit.errors import GGUFError, ModelNotFoundError
from slamkit.gguf import is_valid_gguf, read_gguf

ALL_TYPES_KV: list[tuple[str, int, Any]] = [
    ("general.architecture", 8, "llama"),
    ("u8", 0, 255), ("i8", 1, -128), ("u16", 2, 65535), ("i16", 3, -32768),
    ("u32", 4, 2**32 - 1), ("i32", 5, -(2**31)), ("f32", 6, 1.5), ("bool", 7, True),
    ("str", 8, "héllo"), ("u64", 10, 2**64 - 1), ("i64", 11, -(2**63)), ("f64", 12, 0.25),
    ("arr_i32", 9, (5, [1, -2, 3])), ("arr_str", 9, (8, ["a", "", "ü"])),
    ("arr_empty", 9, (6, [])), ("arr_nested", 9, (9, [(4, [1, 2]), (8, ["x"])])),
    ("llama.context_length", 4, 2048),
]  # fmt: skip


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("endian", ["<", ">"])
def test_synthetic_all_value_types(tmp_path: Path, version: int, endian: str) -> None:
    path = write_gguf(tmp_path / "m.gguf", ALL_TYPES_KV, TENSORS, version=version, e=endian)
    h = read_gguf(path)
    assert h.version == version
    assert h.byte_order == ("little" if endian == "<" else "big")
    m = h.metadata
    assert (m["u8"], m["i8"], m["u16"], m["i16"]) == (255, -128, 65535, -32768)
    assert (m["u32"], m["i32"], m["u64"], m["i64"]) == (2**32 - 1, -(2**31), 2**64 - 1, -(2**63))
    assert (m["f32"], m["f64"], m["bool"], m["str"]) == (1.5, 0.25, True, "héllo")
    assert m["arr_i32"] == [1, -2, 3] and m["arr_str"] == ["a", "", "ü"]
    assert m["arr_empty"] == [] and m["arr_nested"] == [[1, 2], ["x"]]
    assert h.value_types["arr_nested"] == "ARRAY" and h.value_types["f32"] == "FLOAT32"
    assert h.n_params == 640 + 64 + 768
    assert h.tensor_types == {"F32": 1, "Q4_0": 1, "Q4_K": 1}
    assert [t.shape for t in h.tensors] == [(64, 10), (64,), (256, 3)]
    assert h.data_offset % 32 == 0


def test_alignment_key_is_honoured(tmp_path: Path) -> None:
    kv = [("general.alignment", 4, 64), ("general.architecture", 8, "x")]
    path = write_gguf(tmp_path / "a.gguf", kv, TENSORS, alignment=64)
    h = read_gguf(path)
    assert h.alignment == 64 and h.data_offset % 64 == 0


def test_real_smollm2_header(smollm2: Path) -> None:
    h = read_gguf(smollm2)
    assert h.version == 3 and h.architecture == "llama"
    assert 130e6 < h.n_params < 140e6
    assert h.metadata["general.file_type"] == 3  # Q4_1
    assert h.metadata["llama.context_length"] == 8192
    assert len(h.metadata["tokenizer.ggml.tokens"]) == 49152
    assert "<|im_start|>" in h.metadata["tokenizer.chat_template"]
    assert h.tensor_types["Q4_1"] > 200
    assert h.data_offset + max(t.offset + t.n_bytes for t in h.tensors) <= h.file_size


def test_real_gemma_header(gemma: Path) -> None:
    h = read_gguf(gemma)
    assert h.architecture == "gemma3" and 260e6 < h.n_params < 280e6
    assert h.metadata["general.file_type"] == 15  # Q4_K_M
    assert "tokenizer.chat_template" not in h.metadata
    assert len(h.metadata["tokenizer.ggml.scores"]) == 262144


# -- bad inputs: each error names the path and the problem -------------------------------


def _raises(path: Path, exc: type[Exception], *words: str) -> str:
    with pytest.raises(exc) as info:
        read_gguf(path)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg.lower()
    return msg


def test_text_file_renamed_gguf(tmp_path: Path) -> None:
    path = tmp_path / "notes.gguf"
    path.write_text("These are my notes, not a model.\n")
    _raises(path, GGUFError, "not a gguf", "text file")
    assert not is_valid_gguf(path)


def test_empty_and_missing_and_directory(tmp_path: Path) -> None:
    (tmp_path / "empty.gguf").write_bytes(b"")
    _raises(tmp_path / "empty.gguf", GGUFError, "empty")
    _raises(tmp_path / "nope.gguf", ModelNotFoundError, "no such model file")
    _raises(tmp_path, GGUFError, "directory")


def test_legacy_ggml_magic(tmp_path: Path) -> None:
    path = tmp_path / "old.bin"
    path.write_bytes(b"tjgg" + bytes(100))
    _raises(path, GGUFError, "legacy ggml")


@pytest.mark.parametrize(
    "where",
    ["in_magic", "in_counts", "early_metadata", "mid_vocab", "tensor_infos", "mid_data", "last"],
)
def test_truncated_real_file(smollm2: Path, tmp_path: Path, where: str) -> None:
    h = read_gguf(smollm2)
    cut = {
        "in_magic": 3,
        "in_counts": 12,
        "early_metadata": 200,
        "mid_vocab": 500_000,
        "tensor_infos": h.data_offset - 500,
        "mid_data": h.file_size // 2,
        "last": h.file_size - 1,
    }[where]
    path = tmp_path / f"cut_{where}.gguf"
    with open(smollm2, "rb") as src:
        path.write_bytes(src.read(cut))
    assert path.stat().st_size == cut
    if where == "in_magic":
        _raises(path, GGUFError, "not a gguf")
    else:
        msg = _raises(path, GGUFError, "truncated")
        if where == "in_counts":
            assert "inside the header" in msg
        elif where in ("early_metadata", "mid_vocab"):
            assert "metadata" in msg
        elif where == "tensor_infos":
            assert "tensor infos" in msg
        else:
            assert "tensor data missing" in msg
    assert not is_valid_gguf(path)


def test_random_bytes_after_magic(tmp_path: Path) -> None:
    rng = random.Random(1234)
    for i in range(40):
        body = bytes(rng.getrandbits(8) for _ in range(rng.choice([8, 64, 4096])))
        # half the files also carry a valid version so the counts/entries are random
        head = b"GGUF" + (struct.pack("<I", 3) if i % 2 else b"")
        path = tmp_path / f"rand{i}.gguf"
        path.write_bytes(head + body)
        _raises(path, GGUFError)


def test_corrupted_real_header_never_crashes(smollm2: Path, tmp_path: Path) -> None:
    """Flip bytes in the real header: always a GGUFError, never an IndexError/struct.error."""
    head = bytearray(open(smollm2, "rb").read(3000))  # header + first metadata entries
    rng = random.Random(7)
    path = tmp_path / "flipped.gguf"
    for _ in range(60):
        data = bytearray(head)
        for _ in range(3):
            pos = rng.randrange(4, 400)
            data[pos] = rng.getrandbits(8)
        path.write_bytes(bytes(data))
        _raises(path, GGUFError)


def test_absurd_counts(tmp_path: Path) -> None:
    path = tmp_path / "absurd.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**40, 1) + bytes(64))
    _raises(path, GGUFError, "corrupt", "tensors")
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2**50) + bytes(64))
    _raises(path, GGUFError, "corrupt", "metadata")


def test_bad_tensor_info(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "t.gguf", [("general.architecture", 8, "x")], TENSORS)
    data = bytearray(path.read_bytes())
    i = data.index(b"tok.weight") + len(b"tok.weight")
    data[i : i + 4] = struct.pack("<I", 9)  # n_dims 9
    path.write_bytes(bytes(data))
    _raises(path, GGUFError, "corrupt", "dimensions")
    data[i : i + 4] = struct.pack("<I", 2)
    data[i + 20 : i + 24] = struct.pack("<I", 77)  # unknown ggml type
    path.write_bytes(bytes(data))
    _raises(path, GGUFError, "unknown ggml type 77")


def test_unsupported_version(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "v1.gguf", [], [], version=1)
    _raises(path, GGUFError, "version 1")
