"""The job engine: executors, batched idempotent commits, error rows, Ctrl-C, provenance
(mock backends here; the real server executor, SIGKILL and 429s are in test_scaling.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from slamkit import engine
from slamkit.backends.base import GenerationResult, Sampling
from slamkit.backends.mock import MockBackend
from slamkit.errors import SlamkitError
from slamkit.runner import EndpointModel, run_sweep
from slamkit.store import Store, jobs
from slamkit.tasks import add_task

ITEMS = [{"q": f"question {i}"} for i in range(12)]
MODELS = [
    EndpointModel("m1", "http://127.0.0.1:9/v1"),
    EndpointModel("m2", "http://127.0.0.1:9/v1"),
]


class SlowMock(MockBackend):
    """A thread-safe mock that holds each call for ``delay`` s (to overlap calls)."""

    def __init__(self, name: str, delay: float = 0.05, interrupt_after: int | None = None):
        super().__init__(lambda u: f"{name}: {u}", name=name)
        self.delay, self.interrupt_after = delay, interrupt_after
        self._lock = threading.Lock()
        self.n = 0

    def generate(self, messages, sampling, seed) -> GenerationResult:  # type: ignore[no-untyped-def]
        with self._lock:
            self.n += 1
            n = self.n
        if self.interrupt_after is not None and n > self.interrupt_after:
            raise KeyboardInterrupt  # what Ctrl-C raises in the driver
        time.sleep(self.delay)
        return super().generate(messages, sampling, seed)


def _task(store: Store, n: int = 12) -> None:
    add_task(store, "t", "Answer: {q}", ITEMS[:n], id_field=None)


def _keys(store: Store) -> list[str]:
    return sorted(store.df("SELECT gen_key FROM generations")["gen_key"])


def test_concurrent_sweep_stores_the_sequential_keys_and_records_the_load(
    store: Store, tmp_path: Path
) -> None:
    _task(store)
    seq = Store(tmp_path / "seq.duckdb")
    _task(seq)
    a = run_sweep(seq, MODELS, "t", backend_factory=lambda m: SlowMock(m.name), progress=False)
    b = run_sweep(
        store, MODELS, "t", backend_factory=lambda m: SlowMock(m.name), progress=False,
        executor="concurrent", concurrency=4,
    )  # fmt: skip
    assert (a.done, b.done, b.failed) == (24, 24, 0)
    assert _keys(store) == _keys(seq) and len(set(_keys(store))) == 24
    # the same texts: the executor changes how cells run, not what they are
    t1 = seq.df("SELECT gen_key, text FROM generations ORDER BY 1")
    t2 = store.df("SELECT gen_key, text FROM generations ORDER BY 1")
    assert t1.equals(t2)
    rows = store.df("SELECT executor, concurrency, in_flight FROM generations")
    assert set(rows["executor"]) == {"concurrent"} and set(rows["concurrency"]) == {4}
    assert rows["in_flight"].max() > 1 and rows["in_flight"].max() <= 4
    iso = seq.df("SELECT DISTINCT executor, concurrency, in_flight FROM generations")
    assert iso.values.tolist() == [["sequential", 1, 1]]
    run = store.df("SELECT executor, concurrency, parallel, params FROM runs").iloc[0]
    assert (run["executor"], run["concurrency"]) == ("concurrent", 4)
    assert json.loads(run["params"])["executor"] == {"executor": "concurrent", "concurrency": 4}
    assert "concurrent x4" in str(b)
    seq.close()


def test_an_in_process_model_runs_one_call_at_a_time_under_any_executor(store: Store) -> None:
    """A backend that is not thread_safe (in-process llama.cpp) is never called twice at once."""
    _task(store, 6)
    active, most = [0], [0]
    lock = threading.Lock()

    class NotThreadSafe(MockBackend):
        thread_safe = False

        def generate(self, messages, sampling, seed):  # type: ignore[no-untyped-def]
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.02)
            with lock:
                active[0] -= 1
            return super().generate(messages, sampling, seed)

    with pytest.warns(UserWarning, match="runs one call at a time .* --executor ray"):
        res = run_sweep(
            store, MODELS[:1], "t", backend_factory=lambda m: NotThreadSafe(name=m.name),
            progress=False, executor="concurrent", concurrency=4,
        )  # fmt: skip
    assert res.done == 6 and most[0] == 1
    rows = store.df("SELECT in_flight, concurrency FROM generations")
    assert set(rows["in_flight"]) == {1} and set(rows["concurrency"]) == {1}


@pytest.mark.parametrize("executor", ["sequential", "concurrent"])
def test_ctrl_c_keeps_the_committed_rows_and_a_rerun_resumes(store: Store, executor: str) -> None:
    _task(store)
    backend = SlowMock("m1", delay=0.01, interrupt_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(
            store, MODELS[:1], "t", backend_factory=lambda m: backend, progress=False,
            executor=executor, concurrency=None if executor == "sequential" else 3,
        )  # fmt: skip
    kept = _keys(store)
    assert 1 <= len(kept) <= 5  # what finished before the interrupt is stored
    again = run_sweep(
        store, MODELS[:1], "t", backend_factory=lambda m: SlowMock("m1"), progress=False
    )
    assert again.cached == len(kept) and again.done == 12 - len(kept)
    assert len(_keys(store)) == 12 and set(kept) <= set(_keys(store))


def test_rows_are_committed_in_batches_and_each_batch_is_one_write(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    _task(store)
    writes: list[int] = []
    real = jobs.write_cells

    def spy(st, table, key, rows, **kw):  # type: ignore[no-untyped-def]
        writes.append(len(rows))
        return real(st, table, key, rows, **kw)

    monkeypatch.setattr(jobs, "write_cells", spy)
    res = run_sweep(store, MODELS, "t", backend_factory=lambda m: SlowMock(m.name, 0.0),
                    progress=False)  # fmt: skip
    assert res.done == 24 and sum(writes) == 24
    assert max(writes) <= engine.JobSpec("x", "t", "k", "d").flush_rows and len(writes) >= 2


def test_a_failed_cell_is_an_error_row_replaced_by_its_retry(store: Store) -> None:
    _task(store, 4)
    failing = MockBackend(lambda u: "ok", name="m1", fail_on="question 2")
    res = run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: failing, progress=False,
                    executor="concurrent", concurrency=2)  # fmt: skip
    assert (res.done, res.failed) == (3, 1) and "scripted failure" in res.errors[0]
    again = run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: MockBackend(name="m1"),
                      progress=False)  # fmt: skip
    assert (again.cached, again.done) == (3, 1)
    assert store.count("generations") == 4 and store.count("generations", "error IS NOT NULL") == 0


def test_job_errors_hold_failures_of_tables_without_an_error_column(store: Store) -> None:
    """Capture (reference_outputs has no error column): a failed item is a job_errors row,
    deleted in the same transaction as the row of its successful retry."""
    from slamkit.references import capture_references

    _task(store, 4)
    bad = MockBackend(lambda u: f"ref {u}", name="ref", fail_on="question 1")
    res = capture_references(store, bad, "t", "ref", Sampling(), 0, progress=False,
                             executor="concurrent", concurrency=2)  # fmt: skip
    assert (res.planned, res.done, res.failed) == (4, 3, 1)
    errs = jobs.job_errors(store, "capture")
    assert len(errs) == 1 and errs["error"][0].startswith("item ")
    assert "scripted failure" in errs["error"][0] and errs["label"][0] == "ref"
    again = capture_references(store, MockBackend(name="ref"), "t", "ref", Sampling(), 0,
                               progress=False)  # fmt: skip
    assert (again.cached, again.done) == (3, 1)
    assert jobs.job_errors(store, "capture").empty
    rows = store.df("SELECT executor, in_flight FROM reference_outputs WHERE source_model='ref'")
    assert set(rows["executor"]) == {"concurrent", "sequential"} and len(rows) == 4


def test_every_job_writes_a_runs_row_with_its_executor(store: Store) -> None:
    from slamkit.metrics.score import score_generations
    from slamkit.references import capture_references

    _task(store, 3)
    capture_references(store, MockBackend(lambda u: u, name="ref"), "t", "ref", Sampling(), 0,
                       progress=False)  # fmt: skip
    run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: MockBackend(name="m1"),
              progress=False)  # fmt: skip
    with pytest.warns(UserWarning, match="rougeL: runs one call at a time"):
        res = score_generations(store, ["rougeL", "max_sentences:4"], progress=False,
                                executor="concurrent", concurrency=2)  # fmt: skip
    assert res.by_label == {"rougeL": 3, "max_sentences:4": 3} and res.done == 6
    runs = store.df("SELECT kind, executor, concurrency FROM runs ORDER BY started_at")
    assert runs.values.tolist() == [
        ["capture", "sequential", 1], ["generate", "sequential", 1], ["score", "concurrent", 2],
    ]  # fmt: skip
    again = score_generations(store, ["rougeL"], progress=False)
    assert (again.done, again.cached, again.run_id) == (0, 3, None)


def test_a_metric_chunk_that_fails_is_stored_in_job_errors_and_retried(store: Store) -> None:
    from slamkit.metrics.score import score_generations
    from slamkit.references import capture_references

    _task(store, 3)
    capture_references(store, MockBackend(lambda u: u, name="ref"), "t", "ref", Sampling(), 0,
                       progress=False)  # fmt: skip
    run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: MockBackend(name="m1"),
              progress=False)  # fmt: skip
    from slamkit.metrics import get_metric

    metric = get_metric("rougeL")
    real = metric.compute

    def broken(**kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("the scorer broke")

    metric.compute = broken  # type: ignore[method-assign]
    res = score_generations(store, [metric], progress=False)
    assert (res.done, res.failed) == (0, 3)
    errs = jobs.job_errors(store, "score")
    assert len(errs) == 3 and "metric rougeL" in errs["error"][0]
    assert "the scorer broke" in errs["error"][0] and "retried" in errs["error"][0]
    metric.compute = real  # type: ignore[method-assign]
    again = score_generations(store, [metric], progress=False)
    assert again.done == 3 and jobs.job_errors(store, "score").empty


def test_executor_arguments_are_checked_before_anything_runs(store: Store) -> None:
    _task(store, 2)
    for kwargs, words in [
        ({"executor": "threads"}, "executor must be sequential, concurrent, server or ray"),
        ({"executor": "sequential", "concurrency": 4}, "--executor concurrent"),
        ({"executor": "concurrent", "parallel": 2}, "--executor server"),
        ({"executor": "concurrent", "concurrency": 0}, "concurrency must be a whole number >= 1"),
        ({"executor": "server", "parallel": 0}, "parallel must be a whole number >= 1"),
    ]:
        with pytest.raises(SlamkitError, match=words.replace("(", r"\(")):
            run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: MockBackend(), **kwargs,
                      progress=False)  # fmt: skip
    assert store.count("generations") == 0 and store.count("runs") == 0


def test_the_server_executor_runs_endpoint_models_concurrently(store: Store) -> None:
    """Only GGUF models get a managed server; an endpoint group runs as concurrent."""
    _task(store, 6)
    res = run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: SlowMock(m.name),
                    progress=False, executor="server", parallel=3)  # fmt: skip
    assert res.done == 6
    rows = store.df("SELECT executor, concurrency, in_flight FROM generations")
    assert set(rows["executor"]) == {"concurrent"} and set(rows["concurrency"]) == {3}
    assert rows["in_flight"].max() > 1  # the calls overlapped


def test_cli_flags_reach_the_engine(tmp_path: Path) -> None:
    from slamkit.cli import build_parser

    p = build_parser()
    a = p.parse_args(["run", "--executor", "server", "--parallel", "4", "--server-binary", "x"])
    assert (a.executor, a.parallel, a.server_binary, a.concurrency) == ("server", 4, "x", None)
    a = p.parse_args(["refs", "capture", "--model", "m", "--executor", "concurrent",
                      "--concurrency", "8"])  # fmt: skip
    assert (a.executor, a.concurrency) == ("concurrent", 8)
    for cmd in (["judge", "--base-url", "http://x/v1", "--model", "j"], ["score"]):
        a = p.parse_args([*cmd, "--executor", "concurrent", "--concurrency", "2"])
        assert (a.executor, a.concurrency) == ("concurrent", 2)
    a = p.parse_args(["score", "--executor", "server"])  # no GGUF to serve: as concurrent
    assert a.executor == "server"
    with pytest.raises(SystemExit):
        p.parse_args(["score", "--models-at-once", "2"])  # a sweep's flag only


def test_models_served_at_once_share_one_in_flight_count(store: Store) -> None:
    """With models_at_once=2 two groups run at the same time; in_flight counts the
    requests of both (they share the machine), and every cell is stored once."""
    _task(store, 8)
    res = run_sweep(store, MODELS, "t", backend_factory=lambda m: SlowMock(m.name, 0.05),
                    progress=False, executor="server", parallel=2, models_at_once=2)  # fmt: skip
    assert (res.done, res.failed) == (16, 0)
    rows = store.df("SELECT model_id, in_flight FROM generations")
    assert rows["in_flight"].max() > 2 and rows["in_flight"].max() <= 4  # 2 models x 2
    assert json.loads(store.df("SELECT params FROM runs")["params"][0])["executor"][
        "models_at_once"] == 2  # fmt: skip
    with pytest.raises(SlamkitError, match="--models-at-once is an option of --executor server"):
        run_sweep(store, MODELS, "t", backend_factory=lambda m: SlowMock(m.name),
                  progress=False, models_at_once=2)  # fmt: skip


def test_an_interrupt_while_models_run_at_once_stops_both_and_keeps_rows(store: Store) -> None:
    _task(store)
    backends = {m.name: SlowMock(m.name, 0.02, interrupt_after=4) for m in MODELS}
    with pytest.raises(KeyboardInterrupt):
        run_sweep(store, MODELS, "t", backend_factory=lambda m: backends[m.name],
                  progress=False, executor="server", parallel=2, models_at_once=2)  # fmt: skip
    kept = store.count("generations")
    assert 1 <= kept <= 8 and all(b.closed for b in backends.values())
    again = run_sweep(store, MODELS, "t", backend_factory=lambda m: SlowMock(m.name, 0.0),
                      progress=False)  # fmt: skip
    assert again.cached == kept and store.count("generations") == 24


def test_a_server_binary_that_is_not_there_stops_the_sweep_before_anything_runs(
    store: Store, tmp_path: Path
) -> None:
    _task(store, 2)
    want = r"^--server-binary \(server_binary=\): the llama-server binary .*/nope/llama-server "
    with pytest.raises(SlamkitError, match=want + "does not exist — pass"):
        run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: MockBackend(),
                  progress=False, executor="server", server_binary=tmp_path / "nope" /
                  "llama-server")  # fmt: skip
    assert store.count("runs") == 0 and store.count("generations") == 0


def test_a_model_or_sampling_named_twice_plans_its_cells_once(store: Store) -> None:
    _task(store, 3)
    res = run_sweep(store, [MODELS[0], MODELS[0]], "t", [Sampling(), Sampling()],
                    backend_factory=lambda m: MockBackend(name=m.name), progress=False)  # fmt: skip
    assert (res.planned, res.done) == (3, 3) and store.count("generations") == 3


def test_the_servers_a_sweep_started_are_recorded_in_its_runs_row(store: Store) -> None:
    """What really served is provenance: the engine stores the executor's ``servers``."""
    _task(store, 2)

    class Recording(engine.ConcurrentExecutor):
        servers = [{"model": "m1", "server": "xllamacpp 1.0", "parallel": 2}]

    run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: MockBackend(name=m.name),
              progress=False, executor=Recording(2))  # fmt: skip
    params = json.loads(store.df("SELECT params FROM runs")["params"][0])
    assert params["servers"] == Recording.servers and params["executor"]["concurrency"] == 2


def test_a_study_of_rows_all_timed_under_load_leaves_timings_blank_and_says_why(
    store: Store, tmp_path: Path
) -> None:
    from slamkit.study import Study

    _task(store, 4)
    run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: MockBackend(name=m.name),
              progress=False)  # fmt: skip
    store.db.execute("UPDATE generations SET executor = 'server', in_flight = 3")
    store.close()
    study = Study(store.path, "t")
    note = study.timings_note()
    assert "none of the 4 requests was measured in isolation" in note and "timings='all'" in note
    perf = study.perf.iloc[0]
    assert (perf["n"], perf["n_timed"]) == (4, 0) and pd.isna(perf["mean_latency_s"])
    with pytest.raises(SlamkitError, match="timed under load .* timings='all'"):
        study.cost_table()
    loaded = Study(store.path, "t", timings="all")
    assert loaded.perf.iloc[0]["n_timed"] == 4 and loaded.perf.iloc[0]["mean_latency_s"] > 0
    assert "all 4 requests, 4 of them timed under load" in loaded.timings_note()
    with pytest.raises(SlamkitError, match="timings must be one of isolated, all"):
        Study(store.path, "t", timings="some")
