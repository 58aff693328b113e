"""Serving load tests (slamkit load): the generator, the stored rows, the analysis, the
capacity-based cost — on a real managed llama.cpp server with 2 slots, on an endpoint
that slows down and answers 503 under load, and under a real Ctrl-C."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from slamkit import cost, serving
from slamkit.backends.base import Sampling
from slamkit.backends.stub_endpoint import StubEndpoint
from slamkit.errors import SlamkitError
from slamkit.load import LoadTarget, default_target, run_load
from slamkit.loadgen import LoadGenerator, PointInfo, Prepared, Record
from slamkit.runner import EndpointModel, run_sweep
from slamkit.store import Store, readers
from slamkit.tasks import add_task

GREEDY = Sampling(temperature=0.0, max_tokens=16)
ITEMS = [{"q": f"Name {i + 2} colours of the rainbow."} for i in range(6)]


def _task(store: Store, n: int = 6) -> None:
    add_task(store, "t", "{q}", ITEMS[:n], id_field=None)


def _chat(text: str = "one two three four five six") -> Prepared:
    body = {"model": "stub", "messages": [{"role": "user", "content": text}], "stream": True}
    return Prepared("i1", json.dumps(body).encode())


# -- the generator against a scripted endpoint --------------------------------------------
def test_generator_times_every_token_and_bounds_each_point() -> None:
    """Closed loop keeps c in flight; each request has TTFT, one gap per later token and an
    end; the open loop sends at its due times (send error reported) and stops by itself."""
    with StubEndpoint(reply_words=5, first_token_s=0.02, token_s=0.01) as ep:
        recs: list[Record] = []
        with LoadGenerator(ep.base_url) as gen:
            info = gen.closed(0, [_chat()], 3, 9, 30.0, recs.append)
            assert (info.sent, info.status, len(recs)) == (9, "complete", 9)
            assert {r.status for r in recs} == {"ok"}
            assert max(r.max_in_flight for r in recs) == 3
            r = recs[0]
            assert r.text == "one two three four five" and r.completion_tokens == 5
            assert len(r.itl_s) == 4 and all(g > 0 for g in r.itl_s)
            assert r.ttft_s is not None and r.e2e_s is not None and r.ttft_s < r.e2e_s
            assert r.tpot_s == pytest.approx((r.e2e_s - r.ttft_s) / 4)
            recs.clear()
            # more requests than fit in max_s: the point stops sending by itself
            info = gen.open(1, [_chat()], 20.0, 400, 0.5, recs.append, seed=3)
            assert info.status == "time bound" and 0 < info.sent < 400 == info.planned
            assert all(r.scheduled_at_s is not None and r.scheduled_at_s <= 0.5 for r in recs)
            assert info.lag_mean_s is not None and info.lag_p99_s is not None
            assert len(recs) == info.sent


def test_open_loop_arrivals_are_poisson_at_the_rate() -> None:
    """The due times' gaps are exponential with mean 1/rate (seeded: same schedule again)."""
    with StubEndpoint(reply_words=1) as ep, LoadGenerator(ep.base_url) as gen:
        a: list[Record] = []
        b: list[Record] = []
        gen.open(0, [_chat()], 400.0, 800, 30.0, a.append, seed=7)
        gen.open(0, [_chat()], 400.0, 800, 30.0, b.append, seed=7)
    due = np.sort([r.scheduled_at_s for r in a])
    assert np.allclose(due, np.sort([r.scheduled_at_s for r in b]))
    gaps = np.diff(due)
    assert gaps.mean() == pytest.approx(1 / 400, rel=0.15)
    assert np.std(gaps) == pytest.approx(gaps.mean(), rel=0.2)  # exponential: sd = mean


def test_quantile_ci_covers_the_true_quantile() -> None:
    """Order-statistic intervals cover the true p90 of an exponential at >= 95 %."""
    rng = np.random.default_rng(0)
    true = -math.log(0.1)
    hits = 0
    for _ in range(1000):
        _, lo, hi = serving.quantile_ci(rng.exponential(size=60), 0.9)
        hits += lo <= true <= hi
    assert hits >= 930  # nominal 950, binomial sd ~7


def _rec(i: int, status: str = "ok", ttft: float = 0.1, e2e: float = 1.0) -> Record:
    return Record(0, i, "i", None, sent_at_s=0.0, ttft_s=ttft, e2e_s=e2e, itl_s=[0.1] * 9,
                  completion_tokens=10, status=status)  # fmt: skip


def test_point_summary_goodput_attainment_and_capacity() -> None:
    recs = [_rec(i) for i in range(8)] + [_rec(8, e2e=5.0), _rec(9, "error", None, None)]
    info = PointInfo(0, "closed", 4, None, 10, sent=10, duration_s=2.0)
    target = LoadTarget(ttft_s=0.5, e2e_s=2.0, attainment=0.8)
    row = serving.point_summary(recs, info, target)
    assert (row["sent"], row["ok"], row["errors"]) == (10, 9, 1)
    assert row["throughput_rps"] == pytest.approx(4.5)  # 9 answered in 2 s
    assert row["attainment"] == pytest.approx(0.8) and row["meets_target"]
    assert row["goodput_rps"] == pytest.approx(4.0)
    assert row["output_tps"] == pytest.approx(45.0)
    assert row["itl_p50_s"] == pytest.approx(0.1) and row["e2e_p50_s"] == pytest.approx(1.0)
    slow = serving.point_summary(recs, info, LoadTarget(ttft_s=None, e2e_s=0.5))
    assert slow["attainment"] == 0 and not slow["meets_target"]
    t = pd.DataFrame([{**row, "mode": "closed"}, {**slow, "point": 1, "mode": "closed",
                      "concurrency": 8, "throughput_rps": 9.0}])  # fmt: skip
    cap = serving.capacity(t)
    assert cap["capacity_rps"] == pytest.approx(4.5) and cap["at"] == "concurrency 4"


def test_sweep_stops_past_the_knee_or_when_errors_climb() -> None:
    h = [{"concurrency": 1, "error_rate": 0.0, "throughput_rps": 1.0, "e2e_p50_s": 1.0}]
    assert serving.past_knee(h) == ""
    h.append({"concurrency": 2, "error_rate": 0.0, "throughput_rps": 1.9, "e2e_p50_s": 1.05})
    assert serving.past_knee(h) == ""
    h.append({"concurrency": 4, "error_rate": 0.0, "throughput_rps": 2.0, "e2e_p50_s": 2.0})
    assert "past the knee" in serving.past_knee(h)
    assert serving.past_knee(h, auto=False) == ""  # given levels all run ...
    h.append({"concurrency": 8, "error_rate": 0.25, "throughput_rps": 2.0, "e2e_p50_s": 4.0})
    assert "errors and timeouts reached 25%" in serving.past_knee(h, auto=False)  # ... but this


# -- the real path: a managed llama.cpp server with 2 slots ------------------------------
def _servers() -> list[psutil.Process]:
    """Managed servers started by this test process (not by anything else on the machine)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "slamkit.backends.serve_child" in cmd:
            out.append(p)
    return out


def test_load_test_on_a_real_server_with_two_slots(store: Store, smollm2: Path) -> None:
    """The default path: a managed llama.cpp server of 2 slots, c = 1, 2 and 4, greedy.
    Rows: the run with its server's provenance, one point per level, every request timed,
    every answer a generation flagged with the load id that the study leaves out; the
    greedy answers under load are compared with the isolated ones; the server is gone."""
    _task(store, 4)
    before = {p.pid for p in _servers()}
    iso = run_sweep(store, [smollm2], "t", GREEDY, n_threads=1, progress=False)
    assert iso.done == 4
    res = run_load(store, "t", smollm2, sampling=GREEDY, concurrency=[1, 2, 4],
                   requests_per_point=4, parallel=2, n_threads=1, progress=False)  # fmt: skip
    assert res.status == "complete" and res.ok == 12, str(res)
    assert {p.pid for p in _servers()} <= before
    run = readers.load_runs(store).iloc[0]
    server = json.loads(run["server"])
    assert run["protocol"] == "llama.cpp" and server["parallel"] == 2, server
    assert json.loads(run["hardware"])["logical_cores"] >= 1
    assert run["target_source"].startswith("default")  # no captured reference latencies
    points = readers.load_points(store, [res.load_id])
    assert list(points["concurrency"]) == [1, 2, 4]
    reqs = readers.load_requests(store, [res.load_id])
    assert len(reqs) == 12 and set(reqs["status"]) == {"ok"}
    assert reqs["ttft_s"].notna().all() and (reqs["e2e_s"] > reqs["ttft_s"]).all()
    assert reqs.groupby("point")["in_flight"].max().tolist()[:2] == [1, 2]
    assert all(len(json.loads(v)) >= 1 for v in reqs["itl_s"])
    gens = store.df("SELECT * FROM generations WHERE load_id IS NOT NULL")
    assert len(gens) == 12 and set(gens["executor"]) == {"load"}
    assert set(gens["gen_key"]) == set(reqs["gen_key"])
    # the study's generations are only the isolated ones
    assert len(readers.generations(store, readers.Selection("t"))) == 4
    changes = serving.text_changes(store, [res.load_id])
    greedy = changes[changes["greedy"]].iloc[0]
    assert greedy["compared"] == 12
    # one request at a time through the server gives the in-process text
    c1 = store.df(
        "SELECT l.text = b.text AS same FROM load_requests q "
        "JOIN generations l ON l.gen_key = q.gen_key JOIN generations b ON b.gen_key = q.cell_key "
        "WHERE q.point = 0"
    )
    assert c1["same"].all()
    table = serving.load_table(store, res.load_id)
    assert len(table) == 3 and table["throughput_rps"].gt(0).all()
    assert "capacity at the target" in str(res) and "greedy answers under load" in str(res)


def test_capacity_prices_self_hosting_when_a_load_test_exists() -> None:
    """cost: a usage row with capacity_rph is priced from it and says so; the study's
    perf and cost table use the newest load test (mock dry run, scripted endpoint)."""
    usage = pd.DataFrame([
        {"model": "m", "kind": "self-hosted", "tokens_in": 10, "tokens_out": 20,
         "latency_s": 2.0, "capacity_rph": 7200.0, "throughput_basis": "load test x"},
        {"model": "gpt-4", "kind": "api", "tokens_in": 10, "tokens_out": 20},
    ])  # fmt: skip
    t = cost.cost_table(usage)
    m = t[t["model"] == "m"].iloc[0]
    assert m["requests_per_hour"] == 7200.0 and m["throughput_basis"] == "load test x"
    assert m["cost_per_request"] == pytest.approx(m["hourly_usd"] / (7200.0 * 0.5))
    seq = cost.cost_table(usage.drop(columns=["capacity_rph", "throughput_basis"]))
    assert seq.loc[0, "throughput_basis"] == cost.SEQUENTIAL_BASIS
    assert seq.loc[0, "requests_per_hour"] == pytest.approx(1800.0)


def test_notebook_path_mock_load_test_feeds_the_cost_model(tmp_path: Path, smollm2: Path) -> None:
    """run_load(backend='mock') + Study: perf carries the load test's capacity as
    requests_per_hour with its basis, and the cost table prices from it."""
    from slamkit.study import Study

    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        _task(st)
        run_sweep(st, [smollm2], "t", GREEDY, backend="mock", progress=False)
        res = run_load(st, "t", smollm2, sampling=GREEDY, concurrency=[1, 2],
                       requests_per_point=6, backend="mock", progress=False)  # fmt: skip
    study = Study(db, "t", reference_model="none")
    perf = study.perf
    row = perf.iloc[0]
    assert row["throughput_basis"].startswith(
        f"load test {res.load_id} (t=0, max 16 tokens): capacity at the target"
    )
    assert row["requests_per_hour"] == pytest.approx(study.capacity["requests_per_hour"][0])
    assert row["requests_per_hour"] != pytest.approx(3600.0 / row["mean_latency_s"])
    assert len(study.load_table()) == 2 and "capacity at the target" in study.load_report()
    # the answers under load can be scored like any other (on request: --load)
    from slamkit.metrics.score import load_scores, score_generations

    with Store(db) as st:
        score_generations(st, ["max_sentences:4"], progress=False)
        assert set(load_scores(st)["model"]) == {"SmolLM2-135M-Instruct.Q4_1 [mock]"}
        res_load = score_generations(st, ["max_sentences:4"], progress=False, load=True)
        assert res_load.done == 12
        models = load_scores(st)["model"].value_counts()
        assert models["SmolLM2-135M-Instruct.Q4_1 [mock] (under load)"] == 12
    assert "priced from the capacity at the latency target" in study.pricing_note()
    # a newer load test with other sampling does not price this study ...
    with Store(db) as st:
        short = run_load(st, "t", smollm2, sampling=Sampling(max_tokens=8), concurrency=[1],
                         requests_per_point=2, backend="mock", progress=False)  # fmt: skip
        cap = serving.capacity_frame(st, "t", 0.0, 16)
        assert list(cap["load_id"]) == [res.load_id]
        assert list(serving.capacity_frame(st, "t")["load_id"]) == [short.load_id]
        # ... and one that met the target at no load is never priced as if it had
        missed = run_load(st, "t", smollm2, sampling=GREEDY, concurrency=[1],
                          requests_per_point=2, target_e2e_s=1e-6, backend="mock",
                          progress=False)  # fmt: skip
    again = Study(db, "t", reference_model="none", max_tokens=16)
    row = again.perf.iloc[0]
    assert "NOT at the latency target" in row["throughput_basis"], row["throughput_basis"]
    assert missed.load_id in row["throughput_basis"]
    assert row["requests_per_hour"] == pytest.approx(3600.0 / row["mean_latency_s"])
    assert "met the target at no load" in again.pricing_note()
    # the mock's answers under load are the mock sweep's texts
    ch = serving.text_changes(Store(db, short_lived=True), [res.load_id])
    assert int(ch["differ"].sum()) == 0 and int(ch["compared"].sum()) == 12


def test_target_comes_from_captured_reference_latencies(store: Store) -> None:
    _task(store)
    assert default_target(store, "t").source.startswith("default")
    rows = [{"ref_id": f"r{i}", "task_id": "t", "item_id": iid, "source_model": "gpt-4",
             "text": "x", "latency_s": 1.0 + i, "ttft_s": 0.1 * (i + 1)}
            for i, iid in enumerate(readers.items(store, "t")["item_id"])]  # fmt: skip
    store.write("reference_outputs", rows)
    t = default_target(store, "t")
    assert t.e2e_s == pytest.approx(np.quantile([1.0 + i for i in range(6)], 0.95))
    assert "captured one at a time from the reference API gpt-4" in t.source
    assert default_target(store, "t", e2e_s=3.0).source == "given"
    with pytest.raises(SlamkitError, match="attainment"):
        LoadTarget(1.0, 2.0, attainment=0)


# -- an endpoint that slows down and answers 503 under load -------------------------------
def test_slow_and_503_endpoint_errors_counted_and_run_ends_on_time(store: Store) -> None:
    """Each answer slows with load and past 2 in flight the endpoint answers 503: the auto
    sweep stops past the knee by itself; given levels run on until errors climb, the 503s
    are counted per point, and nothing is sent after a point's max_s."""
    from helpers import FaultyEndpoint

    _task(store)
    with FaultyEndpoint(max_in_flight=2, slow_after=1, slow_step_s=0.2, chunk_delay_s=0.01,
                        reply_words=6) as ep:  # fmt: skip
        model = EndpointModel("faulty", ep.base_url, timeout=5.0)
        auto = run_load(store, "t", model, sampling=GREEDY, max_concurrency=16,
                        requests_per_point=12, timeout_s=5.0, progress=False)  # fmt: skip
        assert "past the knee" in auto.note and len(auto.points) < 5, str(auto)
        assert ep.stats()["sent_503"] == 0
        res = run_load(store, "t", model, sampling=GREEDY, concurrency=[1, 2, 4, 8],
                       requests_per_point=12, max_point_s=3.0, max_total_s=8.0, timeout_s=5.0,
                       target_e2e_s=2.0, progress=False)  # fmt: skip
        stats = ep.stats()
    assert stats["sent_503"] > 0, str(res)
    assert res.status == "complete"
    assert res.elapsed_s < 8.0 + 5.0 + 10.0  # the bound (+ set-up slack), not a speed claim
    assert "errors and timeouts reached" in res.note and "concurrency 4" in res.note, res.note
    table = serving.load_table(store, res.load_id)
    assert table["errors"].sum() == stats["sent_503"]
    assert table.set_index("concurrency").loc[4, "error_rate"] >= serving.MAX_ERROR_RATE
    reqs = readers.load_requests(store, [res.load_id])
    assert set(reqs.loc[reqs["status"] == "error", "http_status"]) == {503}
    assert (reqs["sent_at_s"] <= 3.0 + 0.5).all()  # nothing sent after a point's max_s
    assert "HTTP 503" in reqs.loc[reqs["status"] == "error", "error"].iloc[0]


def test_bad_load_arguments_are_named(store: Store) -> None:
    _task(store)
    with pytest.raises(SlamkitError, match="concurrency level must be a whole number >= 1"):
        run_load(store, "t", concurrency=[0], progress=False)
    with pytest.raises(SlamkitError, match="rate must be a number > 0"):
        run_load(store, "t", rates=[-1.0], progress=False)
    with pytest.raises(SlamkitError, match="No task 'nope'"):
        run_load(store, "nope", progress=False)
    res = run_load(store, "t", concurrency=[], progress=False)
    assert res.status == "skipped" and readers.load_runs(store).empty


def test_openai_endpoint_without_key_is_refused_before_any_traffic(store: Store) -> None:
    _task(store)
    with pytest.raises(SlamkitError, match="no API key: the environment variable NOKEY"):
        run_load(store, "t", EndpointModel("gpt-4", None, "NOKEY"), progress=False)
    assert readers.load_runs(store).empty


# -- Ctrl-C ----------------------------------------------------------------------------
def test_ctrl_c_of_slamkit_load_keeps_what_it_measured(tmp_path: Path) -> None:
    """A real SIGINT to `slamkit load` mid-point: exit 130 with one line, the requests
    answered before it are stored, the run is marked interrupted."""
    from helpers import FaultyEndpoint

    db = tmp_path / "load.duckdb"
    with Store(db) as st:
        _task(st)
    with FaultyEndpoint(delay_s=0.3, reply_words=4) as ep:
        cmd = [sys.executable, "-m", "slamkit.cli", "--store", str(db), "load", "--task", "t",
               "--endpoint", "faulty", "--base-url", ep.base_url, "--concurrency", "2",
               "--requests", "500", "--quiet"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while len(ep.records()) < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        time.sleep(1.5)  # > the writer's 1 s commit interval
        answered = len(ep.records())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "slamkit load: interrupted" in err and "Traceback" not in err
    with Store(db) as st:
        run = readers.load_runs(st).iloc[0]
        reqs = readers.load_requests(st, [run["load_id"]])
        points = readers.load_points(st, [run["load_id"]])
    assert run["status"] == "interrupted" and "Ctrl-C" in run["note"], (run["note"], out, err)
    assert len(reqs) >= answered - 2 and set(reqs["status"]) == {"ok"}  # 2 were in flight
    assert points.iloc[0]["status"] == "interrupted"


def test_cli_against_an_endpoint_that_is_down_names_the_error(tmp_path: Path) -> None:
    """Every request fails to connect: stored as errors, the sweep stops after the first
    point, the report names the error, exit 1."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    db = tmp_path / "down.duckdb"
    with Store(db) as st:
        _task(st, 3)
    cmd = [sys.executable, "-m", "slamkit.cli", "--store", str(db), "load", "--task", "t",
           "--endpoint", "x", "--base-url", f"http://127.0.0.1:{port}/v1", "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Cannot connect to host 127.0.0.1" in done.stdout
    assert "errors and timeouts reached 100% of requests at concurrency 1" in done.stdout
    assert "no request was answered" in done.stderr
    with Store(db) as st:
        reqs = readers.load_requests(st, list(readers.load_runs(st)["load_id"]))
    assert len(reqs) == 8 and set(reqs["status"]) == {"error"}


def test_headline_says_what_priced_each_variant() -> None:
    from slamkit import frames

    perf = pd.DataFrame({
        "variant": ["a", "b", "c"], "mean_latency_s": [2.0, 2.0, 2.0],
        "p50_latency_s": [2.0] * 3, "p95_latency_s": [2.5] * 3, "decode_tps": [50.0] * 3,
        "truncated_share": [0.0] * 3,
        "requests_per_hour": [7200.0, 1800.0, 1800.0],
        "throughput_basis": ["load test L (t=0, max 8 tokens): capacity at the target (c=2)",
                             cost.SEQUENTIAL_BASIS,
                             f"{cost.SEQUENTIAL_BASIS}; NOT at the latency target: load test M"],
    })  # fmt: skip
    quality = pd.DataFrame({"variant": ["a", "b", "c"], "mean": [0.5] * 3, "lo": [0.4] * 3,
                            "hi": [0.6] * 3, "n": [10] * 3})  # fmt: skip
    h = frames.headline(perf, quality, None, 0.36, 0.5, "q").set_index("variant")
    assert h.loc["a", "priced from"] == "load test capacity"
    assert h.loc["b", "priced from"] == "one at a time"
    assert h.loc["c", "priced from"] == "one at a time (load test: target missed)"
    assert h.loc["a", "USD / 1K requests"] == pytest.approx(1000 * 0.36 / (7200 * 0.5), rel=1e-3)
