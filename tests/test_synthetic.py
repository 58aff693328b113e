"""slamkit.store.synthetic.grow: a tiny real store grown into a synthetic one (the scale
benchmark's input): row counts, unique runner-compatible keys, real rows untouched,
deterministic, and the aggregates work on it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from slamkit.backends.base import Sampling
from slamkit.backends.llamacpp import planned_chat_format
from slamkit.catalog import ModelInfo
from slamkit.errors import StoreError
from slamkit.runner import plan_cells
from slamkit.store import Selection, Store, aggregates, jobs
from slamkit.store.synthetic import grow, model_rows
from slamkit.tasks import messages_for

SAMPLING = Sampling(max_tokens=16)
N_ITEMS, N_VARIANTS, N_SAMPLES = 5, 3, 2


def _source(path: Path) -> Path:
    """5 items with references, 2 models x 5 items x 1 sample, one rougeL score each."""
    with Store(path) as st:
        st.insert("tasks", {"task_id": "t", "template": "{q}", "system_prompt": "Be brief."})
        st.insert_many(
            "items",
            [{"task_id": "t", "item_id": f"i{i}", "position": i, "fields": {"q": f"Q{i}?"},
              "prompt": f"Question {i}: why is the sky blue? Ünïcode ok."} for i in range(N_ITEMS)],
        )  # fmt: skip
        st.insert_many(
            "reference_outputs",
            [{"ref_id": f"r{i}", "task_id": "t", "item_id": f"i{i}", "source_model": "gpt",
              "text": f"Reference answer {i}: " + "Rayleigh scattering. " * 40}
             for i in range(N_ITEMS)],
        )  # fmt: skip
        st.insert_many(
            "models",
            [{"model_id": m, "name": f"M{m[0]}.Q4_0", "path": f"/x/{m}.gguf", "family": "fam",
              "architecture": arch, "n_params": 1000, "quant": "Q4_0", "size_bytes": 5000,
              "has_chat_template": arch == "llama", "license": "mit", "tensor_types": "{}"}
             for m, arch in (("a" * 64, "llama"), ("b" * 64, "gemma3"))],
        )  # fmt: skip
        gens, scores = [], []
        for m, fmt in (
            ("a" * 64, "gguf-template"),
            ("b" * 64, planned_chat_format(False, "gemma3")),
        ):
            for i in range(N_ITEMS):
                key = f"real-{m[0]}{i}"
                gens.append(
                    {"gen_key": key, "run_id": "run-real", "model_id": m, "task_id": "t",
                     "item_id": f"i{i}", "sample_index": 0, "seed": 0,
                     "sampling": SAMPLING.as_dict(), "chat_format": fmt,
                     "text": f"Because of scattering, says {m[0]} on {i}.",
                     "finish_reason": "length", "prompt_tokens": 20, "completion_tokens": 16,
                     "ttft_s": 0.2, "prefill_tps": 100.0, "decode_tps": 40.0, "latency_s": 0.6,
                     "backend": "LlamaCppBackend"}
                )  # fmt: skip
                scores.append({"gen_key": key, "metric": "rougeL", "metric_version": "1",
                               "ref_id": f"r{i}", "value": 0.2 + 0.01 * i})  # fmt: skip
        st.insert_many("generations", gens)
        st.insert_many("scores", scores)
    return path


def _table(path: Path, table: str, where: str = "") -> pd.DataFrame:
    with Store(path, read_only=True) as st:
        df = st.df(f"SELECT * FROM {table} {where}")
    return df.sort_values(list(df.columns[:2])).reset_index(drop=True)


def test_grow_counts_keys_real_rows_and_aggregates(tmp_path: Path) -> None:
    src = _source(tmp_path / "src.duckdb")
    dst = tmp_path / "big.duckdb"
    res = grow(src, dst, N_VARIANTS, N_SAMPLES, seed=3, task_id="t", messages=messages_for,
               error_share=0.0, text_chars=(50, 120), progress=None)  # fmt: skip
    n_syn = N_VARIANTS * N_ITEMS * N_SAMPLES
    assert (res.synthetic_generations, res.synthetic_scores) == (n_syn, n_syn)
    assert (res.generations, res.scores) == (10 + n_syn, 10 + n_syn) and res.runner_keys
    with Store(dst, read_only=True) as st:
        assert st.scalar("SELECT count(DISTINCT gen_key) FROM generations") == 10 + n_syn
        assert st.count("models", "source = 'synthetic'") == N_VARIANTS
        syn = st.df("SELECT * FROM generations WHERE run_id LIKE 'run-synthetic%'")
        assert set(syn["sampling"]) == {json.dumps(SAMPLING.as_dict(), sort_keys=True)}
        assert syn["text"].str.len().between(1, 120).all() and syn["error"].isna().all()
        assert (syn["latency_s"] > syn["ttft_s"]).all() and (syn["decode_tps"] > 0).all()
        assert sorted(syn["seed"].unique()) == [0, 1] and len(set(syn["text"])) > n_syn // 2
        sc = st.df("SELECT s.* FROM scores s JOIN generations g USING (gen_key) "
                   "WHERE g.run_id LIKE 'run-synthetic%'")  # fmt: skip
        assert sc["value"].between(0, 1).all() and set(sc["ref_id"]) <= {f"r{i}" for i in range(5)}
        # the keys are the runner's: planning the same sweep finds every synthetic cell
        task_items = jobs.task_items(st, "t")
        items = list(zip(task_items["item_id"], task_items["prompt"], strict=True))
        for row in model_rows(st, "t"):
            if row["source"] != "synthetic":
                continue
            info = ModelInfo(
                path=Path(row["path"]), name=row["name"], family=row["family"],
                architecture=row["architecture"], n_params=row["n_params"], quant=row["quant"],
                tensor_types={}, size_bytes=row["size_bytes"], context_length=None,
                has_chat_template=bool(row["has_chat_template"]), chat_template=None,
                license="", license_source="", sha256=row["model_id"],
            )  # fmt: skip
            cells = plan_cells(info, "t", items, "Be brief.", [SAMPLING], N_SAMPLES, 0)
            assert len(jobs.stored_generation_keys(st, [c.key for c in cells])) == len(cells)
        perf = aggregates.variant_summary(st, Selection("t", max_tokens=16))
    assert len(perf) == 2 + N_VARIANTS
    by = perf.set_index("variant")["n"]
    assert by["Ma.Q4_0"] == by["Mb.Q4_0"] == N_ITEMS
    assert sorted(by[by.index.str.contains("~syn")]) == [N_ITEMS * N_SAMPLES] * N_VARIANTS
    # real rows untouched: every source row is in the target, unchanged
    for table in ("models", "items", "reference_outputs", "generations", "scores", "runs"):
        real = _table(src, table)
        cols = list(real.columns)
        where = "WHERE run_id = 'run-real'" if table == "generations" else ""
        where = "WHERE gen_key LIKE 'real-%'" if table == "scores" else where
        where = "WHERE source IS DISTINCT FROM 'synthetic'" if table == "models" else where
        where = "WHERE kind IS DISTINCT FROM 'synthetic'" if table == "runs" else where
        pd.testing.assert_frame_equal(_table(dst, table, where)[cols], real, check_dtype=False)


def test_grow_is_deterministic_and_records_failures(tmp_path: Path) -> None:
    src = _source(tmp_path / "src.duckdb")
    kw = {"task_id": "t", "error_share": 0.5, "progress": None}
    a = grow(src, tmp_path / "a.duckdb", 2, 3, seed=1, **kw)  # type: ignore[arg-type]
    grow(src, tmp_path / "b.duckdb", 2, 3, seed=1, **kw)  # type: ignore[arg-type]
    assert not a.runner_keys  # no messages: unique syn- keys
    ga = _table(tmp_path / "a.duckdb", "generations").drop(columns="created_at")
    gb = _table(tmp_path / "b.duckdb", "generations").drop(columns="created_at")
    pd.testing.assert_frame_equal(ga, gb)
    failed = ga[ga["error"].notna()]
    assert 0 < len(failed) < 30 and failed["text"].isna().all()
    assert a.synthetic_scores == a.synthetic_generations - len(failed)
    with pytest.raises(StoreError, match="exists"):
        grow(src, tmp_path / "a.duckdb", 2, 3, **kw)  # type: ignore[arg-type]
