"""Scaling on one machine, on real parts: the server executor (a managed llama.cpp server
with parallel slots) against the sequential in-process sweep, SIGKILL of a server sweep's
driver, and honest timings in the study when rows were timed under load."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from slamkit.backends.base import Sampling
from slamkit.backends.serve_child import MODULE
from slamkit.runner import run_sweep
from slamkit.store import Store
from slamkit.tasks import add_task

ITEMS = [{"q": q} for q in (
    "Name three primary colors.", "What is 7 times 8?", "Give a synonym of happy.",
    "Write one sentence about the sea.", "What is the capital of Italy?",
    "List two fruits.",
)]  # fmt: skip
GREEDY = Sampling(temperature=0.0, max_tokens=24)


def _task(store: Store) -> None:
    add_task(store, "t", "{q}", ITEMS, id_field=None)


def _servers() -> list[psutil.Process]:
    """Managed server wrappers started by this test session that still run (others on a
    shared machine are not ours: the session's marker is in our processes' environment)."""
    mark = os.environ["SLAMKIT_TEST_SESSION"]
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if MODULE in " ".join(p.info["cmdline"] or []):
                if p.environ().get("SLAMKIT_TEST_SESSION") == mark:
                    out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


@pytest.mark.slow
def test_a_server_sweep_stores_exactly_the_sequential_keys(smollm2: Path, tmp_path: Path) -> None:
    """Same cells, same keys, no duplicates; every row says it was made by the server and
    how many requests were in flight; the runs row records executor and slots."""
    seq, srv = Store(tmp_path / "seq.duckdb"), Store(tmp_path / "srv.duckdb")
    for st in (seq, srv):
        _task(st)
    a = run_sweep(seq, [smollm2], "t", GREEDY, n_threads=1, progress=False)
    before = {p.pid for p in _servers()}
    b = run_sweep(srv, [smollm2], "t", GREEDY, n_threads=1, progress=False, executor="server",
                  parallel=2)  # fmt: skip
    assert (a.done, b.done, b.failed) == (6, 6, 0), str(b)
    ka = seq.df("SELECT gen_key, text FROM generations ORDER BY 1")
    kb = srv.df("SELECT gen_key, text, executor, concurrency, in_flight, backend, "
                "decode_tps, prefill_tps FROM generations ORDER BY 1")  # fmt: skip
    assert list(ka["gen_key"]) == list(kb["gen_key"]) and kb["gen_key"].is_unique
    assert set(kb["executor"]) == {"server"} and set(kb["concurrency"]) == {2}
    assert set(kb["backend"]) == {"ServerBackend"} and kb["in_flight"].max() == 2
    assert kb["decode_tps"].notna().all()
    same = int((ka["text"] == kb["text"]).sum())
    print(f"greedy texts byte-identical, sequential vs server x2: {same} of {len(ka)}")
    run = srv.df("SELECT executor, concurrency, parallel FROM runs WHERE kind='generate'")
    assert run.values.tolist() == [["server", 2, 2]]
    # the server is gone when the sweep is done
    assert {p.pid for p in _servers()} <= before
    # the study's timings leave the rows timed under load out, and say so
    from slamkit.study import Study

    srv.close()
    study = Study(tmp_path / "srv.duckdb", "t")
    loaded = int((kb["in_flight"] > 1).sum())
    assert int(study.perf["n"].iloc[0]) == 6 and int(study.perf["n_timed"].iloc[0]) == 6 - loaded
    note = study.timings_note()
    if loaded == 6:  # every request overlapped another: nothing was timed alone
        assert "none of the 6 requests was measured in isolation" in note
        assert study.perf["mean_latency_s"].isna().all()
    else:
        assert f"{loaded} timed under load (other requests in flight) are left out" in note
    assert len(study.latencies()) == 6 - loaded
    every = Study(tmp_path / "srv.duckdb", "t", timings="all")
    assert int(every.perf["n_timed"].iloc[0]) == 6 and len(every.latencies()) == 6
    seq.close()


def _sweep_cmd(store: Path, model: Path) -> list[str]:
    return [
        sys.executable, "-m", "slamkit.cli", "--store", str(store), "run", "--task", "t",
        "--model", str(model), "--max-tokens", "48", "--threads", "1", "--quiet",
        "--print-rows", "--executor", "server", "--parallel", "2",
    ]  # fmt: skip


@pytest.mark.slow
def test_sigkill_of_a_server_sweep_loses_nothing_and_leaves_no_server(
    smollm2: Path, tmp_path: Path
) -> None:
    db = tmp_path / "kill.duckdb"
    with Store(db) as st:
        _task(st)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    before = {p.pid for p in _servers()}
    proc = subprocess.Popen(_sweep_cmd(db, smollm2), stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    stored: list[str] = []
    for line in proc.stdout:
        if line.startswith("stored "):
            stored.append(line.split()[1])
            break
    ours = [p for p in _servers() if p.pid not in before]
    assert ours, "the sweep's server was not running"
    os.kill(proc.pid, signal.SIGKILL)  # mid-sweep: requests in flight on the server
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(p.is_running() for p in ours):
        time.sleep(0.2)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in ours), (
        "the managed server outlived its SIGKILLed driver"
    )
    done = subprocess.run(_sweep_cmd(db, smollm2), capture_output=True, text=True, env=env,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"6 cells: (\d+) cached, (\d+) generated, 0 failed", done.stdout)
    assert found and int(found.group(1)) >= len(stored), done.stdout
    with Store(db) as st:
        keys = st.df("SELECT gen_key, error FROM generations")
    assert len(keys) == 6 and keys["gen_key"].is_unique and keys["error"].isna().all()
    assert set(stored) <= set(keys["gen_key"])  # nothing committed was lost
    # a sequential run plans exactly the same cells: all cached, nothing to generate
    seq = subprocess.run(
        [sys.executable, "-m", "slamkit.cli", "--store", str(db), "run", "--task", "t",
         "--model", str(smollm2), "--max-tokens", "48", "--quiet"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert "6 cells: 6 cached, 0 generated" in seq.stdout, seq.stdout + seq.stderr
    assert {p.pid for p in _servers()} <= before


@pytest.mark.slow
def test_concurrent_capture_through_429s_from_a_real_endpoint(
    store: Store, llama_server: str
) -> None:
    """4 captures in flight through a proxy to a real llama_cpp.server that answers the
    first requests (and every 4th) with 429 + Retry-After: every item is captured, once,
    with the same text as a sequential capture, and each row records the load it saw."""
    from helpers import FaultyEndpoint

    from slamkit.backends.openai_compat import OpenAIBackend
    from slamkit.references import capture_references

    _task(store)
    small = Sampling(temperature=0.0, max_tokens=12)
    with FaultyEndpoint(
        upstream=llama_server, rate_limit_first=2, rate_limit_every=4, retry_after_s=0.5
    ) as ep:
        be = OpenAIBackend("smollm2", base_url=ep.base_url, max_retries=4)
        res = capture_references(store, be, "t", "gpt-x", small, 0, progress=False,
                                 executor="concurrent", concurrency=4)  # fmt: skip
        stats = ep.stats()
        be.close()
    assert (res.planned, res.done, res.failed) == (6, 6, 0), str(res)
    assert stats["sent_429"] >= 2 and stats["max_in_flight_seen"] >= 2
    refs = store.df("SELECT item_id, text, executor, concurrency, in_flight FROM "
                    "reference_outputs WHERE source_model = 'gpt-x' ORDER BY item_id")  # fmt: skip
    assert refs["item_id"].is_unique and len(refs) == 6
    assert set(refs["executor"]) == {"concurrent"} and set(refs["concurrency"]) == {4}
    assert refs["in_flight"].max() >= 2
    direct = OpenAIBackend("smollm2", base_url=llama_server)
    seq = capture_references(store, direct, "t", "direct", small, 0, progress=False)
    direct.close()
    assert seq.done == 6
    again = store.df("SELECT item_id, text FROM reference_outputs WHERE source_model = "
                     "'direct' ORDER BY item_id")  # fmt: skip
    assert list(again["text"]) == list(refs["text"])  # the same greedy answers


@pytest.mark.slow
def test_a_model_the_server_cannot_load_fails_its_cells_and_the_next_model_runs(
    smollm2: Path, tmp_path: Path, store: Store
) -> None:
    from helpers import write_gguf

    bad = write_gguf(tmp_path / "tiny.gguf", [("general.architecture", 8, "llama")],
                     [("token_embd.weight", (8, 4), 0)])  # fmt: skip
    _task(store)
    before = {p.pid for p in _servers()}
    res = run_sweep(store, [bad, smollm2], "t", GREEDY, n_threads=1, progress=False,
                    executor="server", parallel=2)  # fmt: skip
    assert (res.done, res.failed) == (6, 6), str(res)
    errors = store.df("SELECT DISTINCT error FROM generations WHERE error IS NOT NULL")
    assert len(errors) == 1, errors
    msg = errors["error"][0]
    assert msg.startswith("tiny.gguf: ") and "did not start" in msg and "\n" not in msg
    assert "slamkit catalog --path" in msg
    assert {p.pid for p in _servers()} <= before


def test_ctrl_c_of_a_concurrent_endpoint_sweep_exits_at_once_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    """A real SIGINT (as a terminal sends it) to `slamkit run --executor concurrent`
    against an endpoint that takes 3 s per answer: the CLI exits promptly with 130 and a
    one-line note, committed rows stay, and the rerun generates only the rest."""
    from helpers import FaultyEndpoint

    db = tmp_path / "int.duckdb"
    with Store(db) as st:
        add_task(st, "t", "{q}", [{"q": f"question {i}"} for i in range(12)], id_field=None)
    with FaultyEndpoint(delay_s=3.0) as ep:
        cmd = [sys.executable, "-m", "slamkit.cli", "--store", str(db), "run", "--task", "t",
               "--endpoint", "faulty", "--base-url", ep.base_url, "--quiet", "--print-rows",
               "--executor", "concurrent", "--concurrency", "4"]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stderr is not None
        stored = []
        for line in proc.stdout:
            if line.startswith("stored "):
                stored.append(line.split()[1])
                break
        proc.send_signal(signal.SIGINT)  # mid-wave: 4 requests of the next wave in flight
        t0 = time.monotonic()
        rc = proc.wait(timeout=60)
        waited = time.monotonic() - t0
        err = proc.stderr.read()
        assert rc == 130, err[-2000:]
        assert "interrupted — every row committed before the interrupt is kept" in err
        assert "Traceback" not in err
        assert waited < 30  # not the requests' 60 s timeouts (a bound, not a speed claim)
        with Store(db) as st:
            rows = st.df("SELECT gen_key, executor, concurrency, in_flight FROM generations")
        assert set(stored) <= set(rows["gen_key"]) and len(rows) >= 1
        assert set(rows["executor"]) == {"concurrent"} and rows["in_flight"].max() > 1
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"12 cells: {len(rows)} cached, {12 - len(rows)} generated, 0 failed" in done.stdout
