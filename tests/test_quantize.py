"""Quantization variants with llama.cpp's own quantizer: real SmolLM2 variants and bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_gguf

import slamkit.quantize as qmod
from slamkit.cli import main as cli_main
from slamkit.errors import ModelNotFoundError
from slamkit.gguf import read_gguf
from slamkit.quantize import (
    LEGACY_LADDER,
    QuantFallbackWarning,
    QuantizeError,
    fallback_report,
    ftype_id,
    output_path,
    quantize,
    variant_ladder,
)


@pytest.fixture(scope="module")
def variants_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("variants")


# -- fast: names, paths, fallback detection on synthetic headers ----------------------------


def test_unknown_ftype_lists_valid_names() -> None:
    with pytest.raises(QuantizeError) as info:
        ftype_id("Q4_9")
    msg = str(info.value)
    assert "'Q4_9'" in msg and "Q4_0" in msg and "Q4_K_M" in msg and "Q8_0" in msg
    assert ftype_id("q4_k_m") == 15 and ftype_id("Q8_0") == 7
    with pytest.raises(QuantizeError, match="importance matrix"):
        ftype_id("IQ2_XXS")


def test_bad_request_fails_before_any_work(smollm2: Path, tmp_path: Path) -> None:
    with pytest.raises(QuantizeError, match="Valid names"):
        variant_ladder(smollm2, ["Q8_0", "Q9_Z"], tmp_path)
    assert not list(tmp_path.iterdir())  # validated up front: nothing was quantized
    with pytest.raises(ModelNotFoundError, match="nope.gguf"):
        quantize(tmp_path / "nope.gguf", "Q4_0", tmp_path)


def test_output_path_keeps_source_quant() -> None:
    out = output_path("/m/SmolLM2-135M-Instruct.Q4_1.gguf", "q8_0", "/v")
    assert out == Path("/v/SmolLM2-135M-Instruct.Q4_1.Q8_0.gguf")


def test_fallback_report_synthetic(tmp_path: Path) -> None:
    tensors = [
        ("blk.0.attn_q.weight", (576, 576), 6),  # Q5_0: a fallback from Q4_K
        ("blk.0.ffn_down.weight", (1536, 576), 12),  # Q4_K: as requested
        ("output.weight", (576, 64), 8),  # Q8_0: fallback from Q6_K
        ("blk.0.attn_norm.weight", (576,), 0),  # 1-D F32: never quantized
    ]
    path = write_gguf(tmp_path / "k.gguf", [("general.architecture", 8, "llama")], tensors)
    counts, msg = fallback_report(read_gguf(path), "Q4_K_M")
    assert counts == {"Q5_0": 1, "Q8_0": 1}
    assert msg and "2 of 3 weight tensors" in msg and "576" in msg and "Q4_0, Q4_1" in msg
    assert fallback_report(read_gguf(path), "Q4_0") == ({}, None)  # legacy: nothing to fall from


def test_fallback_is_stored_and_shown_in_the_catalog(tmp_path: Path, store) -> None:  # noqa: ANN001
    from slamkit.catalog import catalog_df, inspect_gguf, register

    tensors = [
        ("blk.0.attn_q.weight", (576, 576), 6),  # Q5_0 instead of Q4_K
        ("blk.0.attn_k.weight", (576, 576), 6),  # Q5_0
        ("blk.0.ffn_down.weight", (1536, 576), 12),  # Q4_K: as requested
        ("blk.0.attn_norm.weight", (576,), 0),
    ]
    kv = [("general.architecture", 8, "llama"), ("general.file_type", 4, 15)]  # Q4_K_M
    fake = inspect_gguf(write_gguf(tmp_path / "fake.gguf", kv, tensors), cache=tmp_path)
    honest = inspect_gguf(
        write_gguf(tmp_path / "real.gguf", kv, [("w", (1536, 512), 12)]), cache=tmp_path
    )
    assert fake.quant == "Q4_K_M" and fake.fallback_types == {"Q5_0": 2}
    note = "Q4_K_M requested; 2 of 3 weight tensors written as Q5_0 x2 (row widths 576"
    assert fake.quant_note and fake.quant_note.startswith(note)
    assert honest.quant_note is None and honest.fallback_types == {}
    df = catalog_df([fake, honest]).set_index("name")
    assert df.loc["fake", "quant"] == "Q4_K_M" and df.loc["fake", "quant_note"].startswith(note)
    assert pd.isna(df.loc["real", "quant_note"])
    register(store, [fake, honest])
    rows = store.df("SELECT name, quant, source, tensor_types FROM models").set_index("name")
    assert rows.loc["fake", "quant"] == "Q4_K_M"  # what the file claims ...
    assert rows.loc["fake", "source"] == f"path; {fake.quant_note}"  # ... and what it holds
    assert json.loads(rows.loc["fake", "tensor_types"]) == {"Q5_0": 2, "Q4_K": 1, "F32": 1}
    assert rows.loc["real", "source"] == "path"


def test_failed_quantization_leaves_no_file(
    smollm2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")

    def broken(src: bytes, out: bytes, params: object) -> int:
        Path(out.decode()).write_bytes(b"GGUF half a file")
        return 1

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", broken)
    with pytest.raises(QuantizeError, match="could not quantize") as info:
        quantize(smollm2, "Q5_0", tmp_path)
    assert str(smollm2) in str(info.value)
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temp file remain


# -- real llama.cpp quantizer on SmolLM2 ------------------------------------------------------


@pytest.mark.slow
def test_ladder_q8_0_and_q4_0_real(smollm2: Path, variants_dir: Path, store) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    infos = variant_ladder(smollm2, ["Q8_0", "Q4_0"], variants_dir, store)
    parent_sha = read_sha(smollm2)
    for info, want in zip(infos, ["Q8_0", "Q4_0"], strict=True):
        assert info.path == output_path(smollm2, want, variants_dir).resolve()
        assert info.quant == want and info.requested_quant == want
        assert info.parent_model_id == parent_sha and info.source == "quantize"
        # the requested type holds the bulk of the weights (output/embeddings may differ)
        weights = sum(v for k, v in info.tensor_types.items() if k != "F32")
        assert info.tensor_types[want] >= 0.9 * weights
        assert info.tensor_types == read_gguf(info.path).tensor_types
        assert info.fallback_types == {} and any("requantized from Q4_1" in n for n in info.notes)
        assert info.license == "apache-2.0" and info.has_chat_template
        assert info.n_params == pytest.approx(134_515_008, rel=0.01)
    q8, q4 = infos
    assert q4.size_bytes < read_gguf(smollm2).file_size < q8.size_bytes
    rows = store.df("select model_id, parent_model_id, quant, tensor_types, source from models")
    by_id = rows.set_index("model_id")
    assert set(by_id.index) == {parent_sha, q8.sha256, q4.sha256}
    assert by_id.loc[q8.sha256, "parent_model_id"] == parent_sha
    assert by_id.loc[q4.sha256, "quant"] == "Q4_0"
    assert json.loads(by_id.loc[q4.sha256, "tensor_types"]) == q4.tensor_types
    assert pd.isna(by_id.loc[parent_sha, "parent_model_id"])


def read_sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_variant_loads_and_generates(smollm2: Path, variants_dir: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    info = quantize(smollm2, "Q4_0", variants_dir)  # reuses the file from the ladder test
    llm = llama_cpp.Llama(
        model_path=str(info.path), n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False
    )
    try:
        out = llm("The capital of France is", max_tokens=2, temperature=0.0, seed=0)
        assert out["usage"]["completion_tokens"] >= 1
        assert isinstance(out["choices"][0]["text"], str)
    finally:
        llm.close()


@pytest.mark.slow
def test_existing_output_is_reused(
    smollm2: Path, variants_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("llama_cpp")
    first = quantize(smollm2, "Q8_0", variants_dir)
    mtime = first.path.stat().st_mtime_ns

    def must_not_run(*a: object, **k: object) -> None:
        raise AssertionError("the quantizer ran although a valid output exists")

    monkeypatch.setattr(qmod, "_run_quantizer", must_not_run)
    again = quantize(smollm2, "q8_0", variants_dir)
    assert again.sha256 == first.sha256 and again.path.stat().st_mtime_ns == mtime
    # a truncated output is not trusted: it is quantized again
    monkeypatch.undo()
    monkeypatch.setenv("SLAMKIT_CACHE_DIR", str(variants_dir / "cache2"))
    data = first.path.read_bytes()
    first.path.write_bytes(data[: len(data) // 2])
    redone = quantize(smollm2, "Q8_0", variants_dir)
    assert redone.sha256 == first.sha256  # llama.cpp's quantizer is deterministic


@pytest.mark.slow
def test_k_quant_fallback_is_reported(smollm2: Path, variants_dir: Path, store) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    with pytest.warns(QuantFallbackWarning, match="not a real Q4_K_M") as rec:
        info = quantize(smollm2, "Q4_K_M", variants_dir, store)
    msg = str(rec[0].message)
    assert "576" in msg and "legacy ladder" in msg
    assert info.quant == "Q4_K_M"  # what the file claims...
    assert sum(info.fallback_types.values()) > 0  # ...and what it holds
    weights = sum(v for k, v in info.tensor_types.items() if k != "F32")
    k_types = sum(v for k, v in info.tensor_types.items() if k.endswith("_K"))
    assert k_types < weights / 2  # most weights are not K-quants on this 576-wide model
    assert any("not a real Q4_K_M" in n for n in info.notes)
    # the models row keeps the fallback: quant as claimed, the truth after the source
    row = store.df("SELECT quant, source FROM models WHERE model_id = ?", [info.sha256]).iloc[0]
    assert row.quant == "Q4_K_M"
    fell = sum(info.fallback_types.values())
    assert row.source.startswith(f"quantize; Q4_K_M requested; {fell} of {weights} weight")
    assert "not divisible by 256" in row.source


@pytest.mark.slow
def test_cli_quantize_and_catalog(
    smollm2: Path, variants_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("llama_cpp")
    db = tmp_path / "cli.duckdb"
    args = ["--store", str(db), "quantize", str(smollm2), "--types", "Q8_0"]
    assert cli_main([*args, "--out", str(variants_dir), "--register"]) == 0
    assert "Q4_1.Q8_0" in capsys.readouterr().out
    argv = ["--store", str(db), "catalog", "--no-defaults", "--glob", str(variants_dir)]
    assert cli_main([*argv, "--register"]) == 0
    out = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct.Q4_1.Q8_0" in out and "new model rows" in out
    assert cli_main(["quantize", str(smollm2), "--types", "Q9", "--out", str(tmp_path)]) == 2
    assert "Valid names" in capsys.readouterr().err
    assert set(LEGACY_LADDER) <= set(qmod.valid_ftypes())


def test_llama_cpp_failure_is_reported_with_its_log(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    kv = [("general.architecture", 8, "no-such-arch")]
    src = write_gguf(tmp_path / "alien.gguf", kv, [("w", (64, 64), 0)])
    with pytest.raises(QuantizeError) as info:
        quantize(src, "Q8_0", tmp_path / "out")
    msg = str(info.value)
    assert str(src) in msg and "Q8_0" in msg and "no-such-arch" in msg
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
