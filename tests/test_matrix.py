"""The variant matrix: drift (KL divergence vs a base), raw speed, determinism, the frame.

Fast tests check the arithmetic on hand-made logits, the frames and the chart; the real
path runs llama.cpp on SmolLM2-135M Q4_1 and the Q4_0 variant derived from it (marked
slow), and checks the vocabulary guard on the real SmolLM2 and Gemma headers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slamkit import charts, frames
from slamkit.backends.base import Sampling
from slamkit.catalog import inspect_gguf, register
from slamkit.cli import main as cli_main
from slamkit.errors import MatrixError, VocabularyMismatchError
from slamkit.matrix import TextSet, run_drift, run_repro, run_speed
from slamkit.matrix import drift as drift_mod
from slamkit.matrix.drift import (
    check_same_vocabulary,
    chunk_tokens,
    drift_summary,
    log_softmax,
    scored_targets,
    token_drift,
)
from slamkit.quantize import quantize
from slamkit.store import Store, readers

TEXT = TextSet(
    "test text",
    " ".join(
        "The quick brown fox jumps over the lazy dog while the committee reviews the "
        f"budget for the year {1990 + i}, and everyone agrees it was a long meeting."
        for i in range(12)
    ),
)


# -- the arithmetic, by hand -------------------------------------------------------------
def _kl_by_hand(base: list[float], var: list[float]) -> float:
    zb = math.log(sum(math.exp(x) for x in base))
    zv = math.log(sum(math.exp(x) for x in var))
    return sum(math.exp(b - zb) * ((b - zb) - (v - zv)) for b, v in zip(base, var, strict=True))


def test_hand_computed_kld_matches_to_1e9() -> None:
    base = [[1.0, 2.0, 0.5, -1.0], [0.0, 0.0, 3.0, 1.0]]
    var = [[0.2, 0.1, 3.0, 0.0], [0.5, -0.5, 2.5, 1.5]]
    out = token_drift(base, var, [1, 3])
    for i in range(2):
        assert abs(out["kld"][i] - _kl_by_hand(base[i], var[i])) < 1e-9
    # row 0: base top is token 1, variant top token 2; row 1: both token 2
    assert out["same_top1"].tolist() == [False, True]
    pb = math.exp(2.0) / sum(math.exp(x) for x in base[0])
    pv = math.exp(0.1) / sum(math.exp(x) for x in var[0])
    assert abs(out["delta_p_top"][0] - (pv - pb)) < 1e-12
    # delta_p is of the actual next token (llama.cpp's), token 3 in row 1
    pb3 = math.exp(1.0) / sum(math.exp(x) for x in base[1])
    pv3 = math.exp(1.5) / sum(math.exp(x) for x in var[1])
    assert abs(out["delta_p"][1] - (pv3 - pb3)) < 1e-12
    assert abs(out["nll"][0] + math.log(pv)) < 1e-12


def test_kld_of_identical_logits_is_zero_and_top1_is_shared() -> None:
    logits = np.random.default_rng(1).normal(size=(50, 300)).astype(np.float32)
    s = drift_summary(token_drift(logits, logits, np.arange(50) % 300))
    assert s["kld_mean"] == 0.0 and s["kld_max"] == 0.0 and s["same_top1"] == 1.0
    assert s["delta_p_top"] == 0.0 and s["ppl_model"] == s["ppl_base"]


def test_summary_statistics_follow_llama_perplexity() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(40, 20))
    var = base + rng.normal(scale=0.5, size=(40, 20))
    per = token_drift(base, var, rng.integers(0, 20, 40))
    s = drift_summary(per, n_chunks=4)
    k = per["kld"]
    assert (k >= 0).all() and s["kld_mean"] > 0
    # llama.cpp's per-token s.e., kept for comparison
    se = math.sqrt((np.mean(k**2) - np.mean(k) ** 2) / (len(k) - 1))
    assert abs(s["kld_se_token"] - se) < 1e-12
    # the CI: batch means over the 4 chunks of 10 tokens, t with 3 degrees of freedom
    means = [float(np.mean(k[i * 10 : (i + 1) * 10])) for i in range(4)]
    bm = float(np.std(means, ddof=1)) / 2.0
    assert s["kld_se"] == pytest.approx(bm, rel=1e-12)
    assert s["kld_hi"] == pytest.approx(s["kld_mean"] + 3.182446305284263 * bm, rel=1e-9)
    one = drift_summary(per)  # one chunk: no honest interval
    assert math.isnan(one["kld_se"]) and math.isnan(one["kld_lo"]) and one["kld_se_token"] > 0
    assert s["kld_p99"] == pytest.approx(np.percentile(k, 99)) and s["kld_max"] == k.max()
    p = per["same_top1"].mean()
    assert s["same_top1"] == p and s["same_top1_se"] == pytest.approx(math.sqrt(p * (1 - p) / 39))
    assert log_softmax([[1000.0, 1000.0]]).tolist() == [[-math.log(2), -math.log(2)]]


def test_second_half_of_each_window_is_scored() -> None:
    chunks = chunk_tokens(list(range(25)), 8, None)
    assert chunks.tolist() == [list(range(8)), list(range(8, 16)), list(range(16, 24))]
    # first = 4: logits at positions 4, 5, 6 predict tokens 5, 6, 7 of each chunk
    assert scored_targets(chunks).tolist() == [5, 6, 7, 13, 14, 15, 21, 22, 23]
    # fewer chunks than windows: spread over the text (first and last), not the first two
    assert chunk_tokens(list(range(25)), 8, 2)[:, 0].tolist() == [0, 16]
    assert chunk_tokens(list(range(41)), 8, 3)[:, 0].tolist() == [0, 16, 32]
    with pytest.raises(MatrixError, match="fewer than one context of 8"):
        chunk_tokens(list(range(5)), 8, None)


def test_shape_mismatch_is_a_vocabulary_error() -> None:
    with pytest.raises(VocabularyMismatchError, match="same vocabulary"):
        token_drift(np.zeros((2, 5)), np.zeros((2, 6)), [0, 1])


# -- vocabularies on the real headers ----------------------------------------------------
def test_vocabulary_mismatch_is_a_clear_error(smollm2: Path, gemma: Path, store: Store) -> None:
    small, big = inspect_gguf(smollm2), inspect_gguf(gemma)
    with pytest.raises(VocabularyMismatchError) as info:
        check_same_vocabulary(small, big)
    msg = str(info.value)
    assert small.name in msg and big.name in msg and "49,152 vs 262,144 tokens" in msg
    assert "use its parent" in msg
    check_same_vocabulary(small, small)
    register(store, [small, big])
    with pytest.raises(VocabularyMismatchError):
        run_drift(store, [small.name], big.name, texts=TEXT, progress=False)
    assert readers.runs(store).empty and readers.drift_results(store).empty  # nothing ran


def test_cli_drift_mismatch_and_bad_flags_exit_2(
    smollm2: Path, gemma: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        register(st, [inspect_gguf(smollm2), inspect_gguf(gemma)])
    code = cli_main(["--store", str(db), "drift", "--model", str(smollm2), "--base", str(gemma)])
    err = capsys.readouterr().err
    assert code == 2 and "vocabularies differ" in err and "gemma" in err
    for argv in (["repro", "--cells", "0"], ["speed", "--reps", "0"], ["drift", "--n-ctx", "4"]):
        with pytest.raises(SystemExit) as ex:
            cli_main(["--store", str(db), *argv])
        assert ex.value.code == 2
    assert "must be a whole number" in capsys.readouterr().err


def test_a_variant_without_parent_needs_a_base(smollm2: Path, store: Store) -> None:
    register(store, [inspect_gguf(smollm2)])
    assert drift_mod.drift_pairs(store) == []  # no variant has a parent: nothing to do
    with pytest.raises(MatrixError, match="has no parent registered.*--base"):
        run_drift(store, ["SmolLM2-135M-Instruct.Q4_1"], texts=TEXT, progress=False)


def test_mock_backend_measures_nothing(smollm2: Path, store: Store) -> None:
    register(store, [inspect_gguf(smollm2)])
    for job in (run_drift, run_speed, run_repro):
        assert job(store, backend="mock", progress=False).planned == 0
    assert readers.runs(store).empty


# -- frames and chart --------------------------------------------------------------------
def _facts() -> pd.DataFrame:
    return pd.DataFrame({
        "model_id": ["p", "v", "g"], "variant": ["P", "V", "G"],
        "family": ["smollm2", "smollm2", "gemma"], "quant": ["Q4_1", "Q4_0", "Q4_K_M"],
        "n_params": [100, 100, 200], "size_bytes": [60, 50, 150],
        "license": ["apache-2.0", "apache-2.0", "gemma"],
        "parent_model_id": [None, "p", None], "parent": [None, "P", None],
    })  # fmt: skip


def test_variant_matrix_joins_every_measurement() -> None:
    t0, t1 = pd.Timestamp("2026-01-01"), pd.Timestamp("2026-01-02")
    quality = pd.DataFrame({"variant": ["P", "V", "G"], "mean": [0.3, 0.2, 0.1],
                            "lo": [0.2, 0.1, 0.0], "hi": [0.4, 0.3, 0.2]})  # fmt: skip
    perf = pd.DataFrame({
        "variant": ["P", "V", "G"], "p95_latency_s": [1.0, 0.9, 2.0],
        "ttft_p50_s": [0.1, 0.2, 0.3], "decode_tps": [45.0, 47.0, 20.0],
    })  # fmt: skip
    t2 = pd.Timestamp("2026-01-03")
    drift = pd.DataFrame({
        "model_id": ["v", "v", "v", "p"], "base_model_id": ["p", "g", "p", "p"],
        "base": ["P", "G", "P", "P"], "kld_mean": [0.4, 9.0, 0.7, 0.0],
        "kld_lo": [0.3, 8.0, 0.6, 0.0], "kld_hi": [0.5, 10.0, 0.8, 0.0],
        "same_top1": [0.75, 0.1, 0.5, 1.0], "created_at": [t0, t1, t2, t2],
        # the newest row for v was measured at n_ctx 512: not the matrix's setting
        "n_ctx": [128, 128, 512, 128], "chunks_asked": [4, 4, 4, 4],
        "n_chunks": [4, 4, 4, 4], "n_tokens": [252, 252, 1020, 252],
        "text_set": ["refs"] * 4, "text_sha256": ["h"] * 4,
    })  # fmt: skip
    speed = pd.DataFrame({
        "model_id": ["v", "v", "v"], "pp_tps_mean": [100.0, 200.0, 900.0],
        "pp_tps_sd": [1.0, 2.0, 9.0], "tg_tps_mean": [40.0, 50.0, 90.0],
        "tg_tps_sd": [0.5, 0.6, 0.9], "load_time_s": [0.1, 0.2, 0.3],
        "peak_rss_mb": [500.0, 510.0, 520.0], "model_mem_mb": [90.0, 95.0, 99.0],
        "created_at": [t0, t1, t2], "n_prompt": [64, 64, 512], "n_gen": [32, 32, 128],
        "n_threads": [1, 1, 1],
    })  # fmt: skip
    repro = pd.DataFrame({
        "model_id": ["v"] * 4, "variant": ["V"] * 4, "gen_key": ["a", "a", "b", "c"],
        "greedy": [True, True, True, False], "same": [True, False, True, True],
        "error": [None] * 4,
    })  # fmt: skip
    m = frames.variant_matrix(_facts(), quality, perf, drift, speed, repro, "rougeL")
    assert list(m.columns) == [c.format(metric="rougeL") for c in frames.MATRIX_COLUMNS]
    v = m.set_index("variant").loc["V"]
    assert v["bits per weight"] == 4.0 and v["size (MB)"] == 50e-6
    # drift against the parent wins over a newer row against another base
    assert v["KLD vs parent"] == 0.4 and v["same top-1 (%)"] == 75.0 and v["drift base"] == "P"
    assert v["drift n_ctx"] == 128 and v["drift tokens"] == 252 and v["drift text"] == "refs"
    assert v["tg tok/s"] == 50.0 and v["pp sd"] == 2.0  # the newest speed row at pp 64 / tg 32
    assert v["pp"] == 64 and v["tg"] == 32 and v["speed threads"] == 1
    assert v["reproducible greedy (%)"] == 50.0 and v["reproducible sampled (%)"] == 100.0
    assert v["re-runs"] == 4 and v["rougeL lo"] == 0.1 and v["p95 latency (s)"] == 0.9
    assert v["TTFT p50 (s)"] == 0.2 and v["decode tok/s"] == 47.0
    # a model compared with itself is no drift figure
    assert math.isnan(m.set_index("variant").loc["P", "KLD vs parent"])
    # asking for other settings picks the rows measured with them, and shows them
    m512 = frames.variant_matrix(_facts(), quality, perf, drift, speed, repro, "rougeL",
                                 drift_n_ctx=512, speed_pp=512, speed_tg=128)  # fmt: skip
    v512 = m512.set_index("variant").loc["V"]
    assert v512["KLD vs parent"] == 0.7 and v512["drift n_ctx"] == 512
    assert v512["tg tok/s"] == 90.0 and v512["pp"] == 512
    other = frames.variant_matrix(_facts(), quality, perf, drift, speed, repro, "rougeL",
                                  drift_chunks=None, drift_text_sha256="other")  # fmt: skip
    assert other["KLD vs parent"].isna().all()
    g = m.set_index("variant").loc["G"]
    assert math.isnan(g["KLD vs parent"]) and math.isnan(g["tg tok/s"]) and g["license"] == "gemma"
    fig = charts.drift_quality(m, "rougeL")
    xs = {t.name: list(t.x) for t in fig.data}
    assert xs["smollm2"] == [0.0, 0.4]  # the base P at 0, its variant at its KLD
    assert "no drift measured: G" in fig.layout.title.text
    note = frames.repro_note(repro)
    assert note.startswith("WARNING") and "V (1 of 2)" in note


def test_repro_note_when_everything_reproduces() -> None:
    repro = pd.DataFrame({
        "model_id": ["v"] * 2, "variant": ["V"] * 2, "gen_key": ["a", "b"],
        "greedy": [True, True], "same": [True, True], "error": [None, None],
    })  # fmt: skip
    note = frames.repro_note(repro)
    assert "all 2 greedy cells" in note and "no sampled cell" in note and "WARNING" not in note
    failed = repro.assign(error=["boom", "boom"], same=[None, None])
    assert frames.reproducibility(failed).empty


# -- the real path: llama.cpp on SmolLM2 and its derived Q4_0 ------------------------------
@pytest.fixture(scope="module")
def q4_0(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(quantize(smollm2, "Q4_0", tmp_path_factory.mktemp("variants")).path)


@pytest.mark.slow
def test_drift_of_self_is_zero_and_of_the_derived_q4_0_is_not(
    smollm2: Path, q4_0: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    quantize(smollm2, "Q4_0", q4_0.parent, store)  # registers parent and variant
    loads: list[str] = []
    real = drift_mod._Evaluator.__init__

    def counting(self, model, n_ctx, n_threads):  # noqa: ANN001, ANN202
        loads.append(Path(model.path).name)
        real(self, model, n_ctx, n_threads)

    monkeypatch.setattr(drift_mod._Evaluator, "__init__", counting)
    r = run_drift(store, texts=TEXT, n_ctx=64, n_chunks=3, progress=False)  # default pair
    assert (r.planned, r.done, r.failed) == (1, 1, 0)
    assert loads == [smollm2.name, q4_0.name]  # the base, then the variant
    parent = "SmolLM2-135M-Instruct.Q4_1"
    run_drift(store, [parent], parent, texts=TEXT, n_ctx=64, n_chunks=3, progress=False)
    assert loads[2:] == [smollm2.name]  # the base's logits came from the cache
    d = readers.drift_results(store).set_index("variant")
    same = d.loc[parent]
    assert same["kld_mean"] == 0.0 and same["same_top1"] == 1.0 and same["kld_max"] == 0.0
    assert same["n_tokens"] == 3 * (64 - 1 - 32) and same["base"] == parent
    var = d.loc[q4_0.stem.replace("SmolLM2-135M-Instruct.Q4_1", parent)]
    assert var["kld_mean"] > 0 and var["kld_lo"] < var["kld_mean"] < var["kld_hi"]
    assert var["same_top1"] < 1.0 and var["kld_p99"] >= var["kld_p90"] >= var["kld_median"]
    assert var["ppl_base"] == pytest.approx(same["ppl_model"])
    again = run_drift(store, texts=TEXT, n_ctx=64, n_chunks=3, progress=False)
    assert (again.planned, again.cached, again.done) == (1, 1, 0) and len(loads) == 3


@pytest.mark.slow
def test_drift_on_the_tasks_references_by_default(smollm2: Path, q4_0: Path, store: Store) -> None:
    from slamkit.references import load_alpaca_eval

    quantize(smollm2, "Q4_0", q4_0.parent, store)
    load_alpaca_eval(store, limit=3)
    r = run_drift(store, n_ctx=64, n_chunks=2, progress=False)
    assert r.done == 1
    row = readers.drift_results(store).iloc[0]
    assert row["text_set"].startswith("alpaca_eval/") and row["n_chunks"] == 2


@pytest.mark.slow
def test_speed_like_llama_bench(smollm2: Path, store: Store) -> None:
    register(store, [inspect_gguf(smollm2)])
    r = run_speed(store, n_prompt=16, n_gen=8, repetitions=2, n_threads=1, progress=False)
    assert (r.done, r.failed) == (1, 0)
    s = readers.speed_results(store).iloc[0]
    assert s["pp_tps_mean"] > 0 and s["tg_tps_mean"] > 0 and s["pp_tps_sd"] >= 0
    assert s["load_time_s"] > 0 and s["peak_rss_mb"] > 0 and s["n_threads"] == 1
    assert len(pd.read_json(__import__("io").StringIO(s["tg_tps"]))) == 2
    again = run_speed(store, n_prompt=16, n_gen=8, repetitions=2, n_threads=1, progress=False)
    assert (again.cached, again.done) == (1, 0)


@pytest.mark.slow
def test_repro_greedy_and_sampled_cells_reproduce(smollm2: Path, store: Store) -> None:
    from slamkit.references import load_alpaca_eval
    from slamkit.runner import run_sweep

    load_alpaca_eval(store, limit=2)
    run_sweep(store, [smollm2], "alpaca_eval", Sampling(max_tokens=12), n_threads=1,
              progress=False)  # fmt: skip
    run_sweep(store, [smollm2], "alpaca_eval", Sampling(max_tokens=12, temperature=0.9),
              limit=1, n_threads=1, seed=5, progress=False)  # fmt: skip
    r = run_repro(store, n_cells=2, k=1, thread_counts=(1, 2), progress=False)
    assert (r.planned, r.done, r.failed) == (6, 6, 0)  # (2 greedy + 1 sampled) x 2 threads
    rows = readers.repro_results(store)
    assert rows["same"].all() and sorted(set(rows["n_threads"])) == [1, 2]
    assert rows["greedy"].sum() == 4 and (rows["stored_sha256"] == rows["text_sha256"]).all()
    per = frames.reproducibility(rows).iloc[0]
    assert per["greedy_pct"] == 100.0 and per["sampled_pct"] == 100.0
    again = run_repro(store, n_cells=2, k=1, thread_counts=(1, 2), progress=False)
    assert (again.cached, again.done) == (6, 0)


@pytest.mark.slow
def test_repro_detects_a_cell_whose_text_changed(smollm2: Path, store: Store) -> None:
    """A sweep whose backend altered the text it stored: the real re-run differs."""
    from slamkit.references import load_alpaca_eval
    from slamkit.runner import default_backend_factory, run_sweep

    load_alpaca_eval(store, limit=1)
    real = default_backend_factory(n_threads=1)

    def altered(model):  # noqa: ANN001, ANN202
        backend = real(model)
        generate = backend.generate

        def gen(messages, sampling, seed):  # noqa: ANN001, ANN202
            res = generate(messages, sampling, seed)
            res.text += " (altered)"
            return res

        backend.generate = gen
        return backend

    run_sweep(store, [smollm2], "alpaca_eval", Sampling(max_tokens=8), backend_factory=altered,
              progress=False)  # fmt: skip
    r = run_repro(store, n_cells=1, k=2, thread_counts=(1,), progress=False)
    assert (r.done, r.failed) == (2, 0)
    rows = readers.repro_results(store)
    assert not rows["same"].any() and rows["attempt"].tolist() == [0, 1]
    assert frames.repro_note(rows).startswith("WARNING: greedy output is not reproducible")


@pytest.mark.slow
def test_repro_across_executors_through_a_managed_server(smollm2: Path, store: Store) -> None:
    from slamkit.references import load_alpaca_eval
    from slamkit.runner import run_sweep

    load_alpaca_eval(store, limit=1)
    run_sweep(store, [smollm2], "alpaca_eval", Sampling(max_tokens=12), n_threads=1,
              progress=False)  # fmt: skip
    r = run_repro(store, n_cells=1, thread_counts=(1,), executors=("sequential", "server"),
                  progress=False)  # fmt: skip
    assert (r.planned, r.done, r.failed) == (2, 2, 0)
    rows = readers.repro_results(store)
    assert sorted(rows["executor"]) == ["sequential", "server"] and rows["same"].all()
    server_run = readers.runs(store).query("kind == 'repro' and executor == 'server'")
    assert len(server_run) == 1 and "xllamacpp" in server_run.iloc[0]["params"]


def test_matrix_cli_and_study_on_a_synthetic_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from helpers import add_synthetic

    from slamkit.matrix import reference_text_set
    from slamkit.study import Study

    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        gen_keys = add_synthetic(st)
        for gk in gen_keys.values():  # one quality metric stored: rougeL
            st.insert("scores", {"gen_key": gk, "metric": "rougeL", "metric_version": "1",
                                 "value": 0.5})  # fmt: skip
        sha = reference_text_set(st, "t", "gpt-4", 2).sha256
        st.insert("drift", {
            "drift_key": "d1", "model_id": "m2", "base_model_id": "m1", "text_set": "x",
            "text_sha256": sha, "n_ctx": 128, "chunks_asked": 4, "kld_mean": 0.25,
            "same_top1": 0.8,
        })  # fmt: skip
        st.insert("drift", {  # measured with other settings: shown only when asked for
            "drift_key": "d2", "model_id": "m2", "base_model_id": "m1", "text_set": "x",
            "text_sha256": sha, "n_ctx": 64, "chunks_asked": None, "kld_mean": 0.5,
            "same_top1": 0.7,
        })  # fmt: skip
        # stored cells whose GGUF files are gone cannot be re-run: nothing is planned
        assert run_repro(st, progress=False).planned == 0
    argv = ["--store", str(db), "matrix", "--task", "t", "--n-items", "2"]
    assert cli_main([*argv, "--reference-model", "gpt-4"]) == 0
    out = capsys.readouterr().out
    assert "model-m1" in out and "model-m2" in out and "KLD vs parent" in out
    assert "no stored cell was re-run yet" in out
    m = Study(db, "t", n_items=2, reference_model="gpt-4").matrix("rougeL").set_index("variant")
    assert (
        m.loc["model-m2", "KLD vs parent"] == 0.25 and m.loc["model-m2", "drift base"] == "model-m1"
    )
    assert math.isnan(m.loc["model-m1", "KLD vs parent"])
    argv += ["--reference-model", "gpt-4"]
    assert cli_main([*argv, "--drift-n-ctx", "64", "--drift-all-chunks"]) == 0
    assert " 0.5 " in capsys.readouterr().out
    assert cli_main([*argv, "--metric", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "rougeL" in err
    missing = tmp_path / "nowhere" / "s.duckdb"
    assert cli_main(["--store", str(missing), "matrix"]) == 2
    assert "no store there" in capsys.readouterr().err and not missing.parent.exists()


@pytest.mark.slow
def test_repro_skips_load_test_answers_and_says_which_cells_it_dropped(
    smollm2: Path, store: Store
) -> None:
    """Load-test answers (``load_id`` set) are not candidates; a stored cell whose key
    cannot be planned again is not drawn, and the result says so — the model still gets
    its cells re-run."""
    from slamkit.references import load_alpaca_eval
    from slamkit.runner import run_sweep

    load_alpaca_eval(store, limit=2)
    run_sweep(store, [smollm2], "alpaca_eval", Sampling(max_tokens=6), n_threads=1,
              progress=False)  # fmt: skip
    good = set(store.df("SELECT gen_key FROM generations")["gen_key"])
    row = store.df("SELECT * FROM generations LIMIT 1").iloc[0].to_dict()
    row = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
    store.insert("generations", {**row, "gen_key": "0-load", "load_id": "load-1"})
    store.insert("generations", {**row, "gen_key": "0-other-version"})
    r = run_repro(store, n_cells=3, k=1, thread_counts=(1,), progress=False)
    assert (r.planned, r.done, r.failed) == (2, 2, 0)  # both sweep cells, nothing else
    rows = readers.repro_results(store)
    assert set(rows["gen_key"]) == good and rows["same"].all()
    assert len(r.skipped) == 1 and "1 stored cell(s)" in r.skipped[0]
    assert "another key" in r.skipped[0] and "skipped:" in str(r)


def test_repro_note_counts_failed_reruns_and_weights_sampled_cells() -> None:
    repro = pd.DataFrame({
        "model_id": ["v", "v", "w", "w", "w"], "variant": ["V", "V", "W", "W", "W"],
        "gen_key": ["a", "s", "b", "t", "u"], "greedy": [True, False, True, False, False],
        "same": [True, True, True, False, False], "error": [None] * 5,
    })  # fmt: skip
    note = frames.repro_note(repro)
    # 1 of 3 sampled cells reproduced (not the mean over variants, 50%)
    assert "1 of 3 (33%)" in note and "WARNING" not in note
    failed = pd.concat([repro, repro.iloc[:1].assign(gen_key="c", same=None, error="boom")])
    note = frames.repro_note(failed)
    assert note.startswith("WARNING: 1 re-run failed") and "all 2 greedy" in note
    only_failed = frames.repro_note(repro.assign(same=None, error="boom"))
    assert only_failed.startswith("WARNING: 5 re-runs failed") and "unknown" in only_failed


@pytest.mark.slow
def test_drift_on_every_window_a_too_short_text_and_an_unregistered_file(
    smollm2: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    import llama_cpp

    db = tmp_path / "s.duckdb"
    cache = tmp_path / "cache"
    vocab = llama_cpp.Llama(model_path=str(smollm2), vocab_only=True, verbose=False)
    windows = len(vocab.tokenize(TEXT.text.encode(), add_bos=False, special=False)) // 32
    vocab.close()
    stale = drift_mod._cache_path(inspect_gguf(smollm2), TEXT, 32, None, cache)
    stale.parent.mkdir(parents=True)
    stale = stale.with_name(f".{stale.stem}.2147483646.tmp.npz")  # a killed save's leftover
    stale.write_bytes(b"partial")
    with Store(db) as st:  # n_chunks=None: every whole window of the text
        r = run_drift(st, [str(smollm2)], str(smollm2), texts=TEXT, n_ctx=32, n_chunks=None,
                      cache=cache, progress=False)  # fmt: skip
        assert (r.done, r.failed) == (1, 0)
        row = readers.drift_results(st).iloc[0]
        assert windows >= 5 and row["n_chunks"] == windows and pd.isna(row["chunks_asked"])
        assert row["n_tokens"] == windows * (32 - 1 - 16) and row["kld_mean"] == 0.0
        assert not list(cache.rglob("*.tmp.npz")) and len(list(cache.rglob("*.npz"))) == 1
        loads: list[str] = []
        monkeypatch.setattr(
            drift_mod._Evaluator,
            "__init__",
            lambda *a: loads.append("load"),  # noqa: ARG005
        )
        with pytest.raises(MatrixError, match="fewer than one context of 32"):
            run_drift(st, [str(smollm2)], str(smollm2), texts=TextSet("short", "Hi there."),
                      n_ctx=32, cache=cache, progress=False)  # fmt: skip
        assert loads == [] and len(st.df("SELECT * FROM drift")) == 1  # no error row stored
    monkeypatch.undo()
    (tmp_path / "t.txt").write_text(TEXT.text, encoding="utf-8")
    code = cli_main(["--store", str(db), "drift", "--model", str(smollm2), "--base",
                     str(smollm2), "--n-ctx", "32", "--all-chunks", "--quiet",
                     "--text-file", str(tmp_path / "t.txt")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and smollm2.name in out and "NaN" not in out.split("\n", 2)[-1]
