"""The ray executor on a real local Ray cluster (one per module): the sequential sweep's
keys, a worker killed mid-sweep, a model file a worker cannot read, provenance, Ctrl-C,
SIGKILL of the driver, and no Ray process left afterwards."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slamkit.backends.base import Sampling
from slamkit.backends.mock import MockBackend
from slamkit.catalog import inspect_gguf
from slamkit.errors import MissingDependencyError
from slamkit.runner import EndpointModel, run_sweep
from slamkit.store import Store
from slamkit.tasks import add_task

ray = pytest.importorskip("ray", reason="make test installs ray (the [ray] extra)")
from helpers import ray_processes_left  # noqa: E402

from slamkit.ray_executor import RayExecutor  # noqa: E402

# the factories below are defined here: Ray's workers get them by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ITEMS = [{"q": f"Say the number {i} in words."} for i in range(8)]
GREEDY = Sampling(temperature=0.0, max_tokens=12)
MODELS = [
    EndpointModel("m1", "http://127.0.0.1:9/v1"),
    EndpointModel("m2", "http://127.0.0.1:9/v1"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One local 2-CPU cluster for the module; every Ray process is gone afterwards."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()
    left = ray_processes_left(60, children_only=True)
    assert not left, "Ray processes outlived ray.shutdown():\n" + "\n".join(left)


def _actor_processes() -> list[int]:
    """Live processes of slamkit's actors (``ray::_Worker``) started by this session."""
    import psutil

    mark = os.environ["SLAMKIT_TEST_SESSION"]
    out = []
    for p in psutil.process_iter():
        try:
            if "ray::_Worker" in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                if p.environ().get("SLAMKIT_TEST_SESSION") == mark:
                    out.append(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _gone(find, within: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + within
    while find() and time.monotonic() < deadline:
        time.sleep(0.3)
    return not find()


def _slow_mock(model: object) -> MockBackend:
    import time

    class Slow(MockBackend):
        def generate(self, messages, sampling, seed):  # type: ignore[no-untyped-def]
            time.sleep(0.3)
            return super().generate(messages, sampling, seed)

    return Slow(lambda u: f"{getattr(model, 'name', 'm')}: {u}", name="mock")


def _task(store: Store, n: int = 8) -> None:
    add_task(store, "t", "{q}", ITEMS[:n], id_field=None)


def _mock(model: object) -> MockBackend:
    return MockBackend(lambda u: f"{getattr(model, 'name', 'm')}: {u}", name="mock")


def test_a_ray_sweep_stores_the_sequential_keys_and_records_nodes(
    cluster: None, tmp_path: Path, store: Store
) -> None:
    seq = Store(tmp_path / "seq.duckdb")
    for st in (seq, store):
        _task(st)
    run_sweep(seq, MODELS, "t", backend_factory=_mock, progress=False)
    res = run_sweep(store, MODELS, "t", backend_factory=_mock, progress=False,
                    executor=RayExecutor(actors_per_model=2))  # fmt: skip
    assert (res.done, res.failed) == (16, 0), str(res)
    a = seq.df("SELECT gen_key, text FROM generations ORDER BY 1")
    b = store.df("SELECT gen_key, text, executor, node FROM generations ORDER BY 1")
    assert list(a["gen_key"]) == list(b["gen_key"]) and list(a["text"]) == list(b["text"])
    assert set(b["executor"]) == {"ray"} and b["node"].notna().all()
    run = store.df("SELECT executor, concurrency, params FROM runs WHERE kind='generate'")
    assert (run["executor"][0], run["concurrency"][0]) == ("ray", 2)
    info = json.loads(run["params"][0])["executor"]
    assert info["ray_version"] == ray.__version__ and info["nodes"][0]["cpus"] == 2
    assert info["cluster"] and info["actors_per_model"] == 2
    seq.close()


@pytest.mark.slow
def test_real_llama_cpp_on_two_actors_gives_the_sequential_texts(
    cluster: None, smollm2: Path, tmp_path: Path, store: Store
) -> None:
    """In-process llama.cpp in each actor: the same numerics as the driver's own run."""
    seq = Store(tmp_path / "seq.duckdb")
    for st in (seq, store):
        _task(st, 4)
    run_sweep(seq, [smollm2], "t", GREEDY, n_threads=1, progress=False)
    res = run_sweep(store, [smollm2], "t", GREEDY, n_threads=1, progress=False,
                    executor="ray", concurrency=2)  # fmt: skip
    assert (res.done, res.failed) == (4, 0), str(res)
    a = seq.df("SELECT gen_key, text FROM generations ORDER BY 1")
    b = store.df("SELECT gen_key, text, backend, decode_tps FROM generations ORDER BY 1")
    assert list(a["gen_key"]) == list(b["gen_key"]) and list(a["text"]) == list(b["text"])
    assert set(b["backend"]) == {"LlamaCppBackend"} and b["decode_tps"].notna().all()
    seq.close()


class _DiesOnce(MockBackend):
    """Kills its worker process the first time it sees item 'number 3' (a marker file
    makes the restarted worker answer)."""

    def __init__(self, marker: str) -> None:
        super().__init__(lambda u: f"answer to {u}", name="m1")
        self.marker = marker

    def generate(self, messages, sampling, seed):  # type: ignore[no-untyped-def]
        if "number 3" in messages[-1]["content"] and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)  # the worker dies mid-task, as on a lost node
        return super().generate(messages, sampling, seed)


def test_a_worker_killed_mid_sweep_loses_and_duplicates_nothing(
    cluster: None, tmp_path: Path, store: Store
) -> None:
    _task(store)
    marker = str(tmp_path / "died")
    res = run_sweep(store, MODELS[:1], "t", backend_factory=lambda m: _DiesOnce(marker),
                    progress=False, executor=RayExecutor(actors_per_model=2))  # fmt: skip
    assert Path(marker).exists(), "the worker was never killed"
    assert (res.done, res.failed) == (8, 0), str(res)  # its cell was retried elsewhere
    rows = store.df("SELECT gen_key, error FROM generations")
    assert len(rows) == 8 and rows["gen_key"].is_unique and rows["error"].isna().all()


def test_a_model_file_a_worker_cannot_read_fails_its_cells_once_with_a_clear_error(
    cluster: None, smollm2: Path, store: Store
) -> None:
    _task(store, 3)
    info = inspect_gguf(smollm2)
    missing = dataclasses.replace(info, path="/shared/models/SmolLM2.gguf", name="Smol-missing")
    other = dataclasses.replace(info, sha256="0" * 64, name="Smol-other")
    res = run_sweep(store, [missing, other], "t", GREEDY, progress=False, executor="ray")
    assert (res.done, res.failed) == (0, 6)
    errors = sorted(store.df("SELECT DISTINCT error FROM generations")["error"])
    assert len(errors) == 2, errors
    gone = next(e for e in errors if "Smol-missing" in e)
    assert "the model file /shared/models/SmolLM2.gguf is not readable on node " in gone
    assert "Ray does not copy model files: put them on storage every node sees" in gone
    changed = next(e for e in errors if "Smol-other" in e)
    assert "not the catalog's 000000000000..." in changed and "\n" not in changed


def test_capture_judge_and_scoring_run_on_ray_too(cluster: None, store: Store) -> None:
    """Every job takes --executor ray: a capture from a local OpenAI-compatible endpoint (the
    backend travels as its settings, the key never), a judge over it, and scoring."""
    from helpers import FaultyEndpoint

    from slamkit.backends.openai_compat import OpenAIBackend
    from slamkit.judge import JudgeConfig, run_judge
    from slamkit.metrics.score import score_generations
    from slamkit.references import capture_references

    _task(store, 4)
    with FaultyEndpoint(reply='{"verdict": "A", "reasoning": "ok"}') as ep:
        be = OpenAIBackend("faulty", base_url=ep.base_url)
        cap = capture_references(store, be, "t", "ref", GREEDY, 0, progress=False,
                                 executor=RayExecutor(actors_per_model=2))  # fmt: skip
        be.close()
        assert (cap.done, cap.failed) == (4, 0), str(cap)
        run_sweep(store, MODELS[:1], "t", backend_factory=_mock, progress=False)
        cfg = JudgeConfig(base_url=ep.base_url, model="faulty", response_format="none")
        judged = run_judge(store, cfg, progress=False, executor=RayExecutor())
        assert (judged.done, judged.failed) == (8, 0), str(judged)
        assert ep.stats()["total"] >= 12
    scored = score_generations(store, ["rougeL"], progress=False, executor=RayExecutor())
    assert (scored.done, scored.failed) == (4, 0) and scored.by_label == {"rougeL": 4}
    refs = store.df("SELECT executor, origin FROM reference_outputs WHERE source_model='ref'")
    assert set(refs["executor"]) == {"ray"} and len(refs) == 4
    kinds = store.df("SELECT kind, executor FROM runs WHERE executor = 'ray' ORDER BY 1")
    assert list(kinds["kind"]) == ["capture", "judge", "score"]


def test_ctrl_c_stops_the_actors_and_keeps_what_was_stored(cluster: None, store: Store) -> None:
    _task(store)
    seen: list[str] = []

    def interrupt(row: dict) -> None:
        seen.append(row["gen_key"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(store, MODELS, "t", backend_factory=_slow_mock, progress=False,
                  executor=RayExecutor(actors_per_model=2), on_row=interrupt)  # fmt: skip
    assert _gone(_actor_processes), "slamkit's Ray actors outlived the interrupt"
    kept = store.count("generations")
    assert kept >= 3
    again = run_sweep(store, MODELS, "t", backend_factory=_mock, progress=False)
    assert again.cached == kept and store.count("generations") == 16


def test_without_ray_the_executor_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, store: Store
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    _task(store, 2)
    with pytest.raises(MissingDependencyError, match=r"pip install 'slamkit\[ray\]'"):
        run_sweep(store, MODELS[:1], "t", backend_factory=_mock, progress=False,
                  executor="ray")  # fmt: skip
    assert store.count("runs") == 0


@pytest.mark.slow
def test_sigkill_of_a_ray_driver_loses_nothing_and_its_cluster_goes(
    smollm2: Path, tmp_path: Path
) -> None:
    """The CLI starts its own local cluster; SIGKILL after the first stored row; the rerun
    keeps every stored row and generates the rest, once."""
    db = tmp_path / "kill.duckdb"
    with Store(db) as st:
        _task(st, 6)
    cmd = [sys.executable, "-m", "slamkit.cli", "--store", str(db), "run", "--task", "t",
           "--model", str(smollm2), "--max-tokens", "12", "--threads", "1", "--quiet",
           "--print-rows", "--executor", "ray", "--concurrency", "2"]  # fmt: skip
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "RAY_ADDRESS": ""}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    stored = []
    for line in proc.stdout:
        if line.startswith("stored "):
            stored.append(line.split()[1])
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"6 cells: (\d+) cached, (\d+) generated, 0 failed", done.stdout)
    assert found and int(found.group(1)) >= len(stored) >= 1, done.stdout
    with Store(db) as st:
        keys = st.df("SELECT gen_key, error, node FROM generations")
    assert len(keys) == 6 and keys["gen_key"].is_unique and keys["error"].isna().all()
    assert set(stored) <= set(keys["gen_key"]) and keys["node"].notna().all()


def test_an_actor_no_node_can_host_fails_before_anything_runs(cluster: None, store: Store) -> None:
    from slamkit.errors import SlamkitError

    _task(store, 2)
    for ex, words in (
        (RayExecutor(num_cpus=3), "asks for 3 CPUs (--threads), but no node"),
        (RayExecutor(num_gpus=0.5), "asks for 0.5 GPUs (--ray-gpus), but no node"),
    ):
        with pytest.raises(SlamkitError, match=re.escape(words)):
            run_sweep(store, MODELS[:1], "t", backend_factory=_mock, progress=False,
                      executor=ex)  # fmt: skip
    assert store.count("runs") == 0 and store.count("generations") == 0
    with pytest.raises(SlamkitError, match="a fraction below 1 or a whole number"):
        RayExecutor(num_gpus=1.5)


def test_the_cli_joins_a_running_cluster_by_address_and_leaves_it_running(
    cluster: None, tmp_path: Path
) -> None:
    """--ray-address joins the module's cluster (its GCS address); a bad address fails in
    seconds with one line."""
    from helpers import FaultyEndpoint

    db = tmp_path / "join.duckdb"
    with Store(db) as st:
        _task(st, 3)
    address = ray.get_runtime_context().gcs_address
    with FaultyEndpoint() as ep:
        base = [sys.executable, "-m", "slamkit.cli", "--store", str(db), "run", "--task", "t",
                "--endpoint", "faulty", "--base-url", ep.base_url, "--quiet",
                "--executor", "ray"]  # fmt: skip
        done = subprocess.run([*base, "--ray-address", address], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert "3 cells: 0 cached, 3 generated, 0 failed" in done.stdout
        other = tmp_path / "other.duckdb"  # cells still to make: the address is used
        with Store(other) as st:
            _task(st, 3)
        base[base.index(str(db))] = str(other)
        bad = subprocess.run([*base, "--ray-address", "127.0.0.1:1"], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert bad.returncode == 2
    assert "the Ray cluster at 127.0.0.1:1 does not answer" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert [n for n in ray.nodes() if n["Alive"]], "joining stopped the cluster it joined"
    with Store(db) as st:
        run = st.df("SELECT params FROM runs WHERE kind = 'generate'")
    assert json.loads(run["params"][0])["executor"]["cluster"] == address


@pytest.mark.slow
def test_actors_can_serve_their_model_with_a_managed_server(
    cluster: None, smollm2: Path, store: Store
) -> None:
    """--parallel under Ray: each actor starts a llama.cpp server on its node and feeds it;
    the server goes with the actor."""
    _task(store, 4)
    res = run_sweep(store, [smollm2], "t", GREEDY, progress=False, executor="ray",
                    parallel=2)  # fmt: skip
    assert (res.done, res.failed) == (4, 0), str(res)
    rows = store.df("SELECT backend, executor, concurrency, node FROM generations")
    assert set(rows["backend"]) == {"ServerBackend"} and set(rows["executor"]) == {"ray"}
    assert set(rows["concurrency"]) == {2} and rows["node"].notna().all()

    def servers() -> list[int]:
        import psutil

        mark = os.environ["SLAMKIT_TEST_SESSION"]
        found = []
        for p in psutil.process_iter():
            try:
                if "slamkit.backends.serve_child" in " ".join(p.cmdline()):
                    if p.environ().get("SLAMKIT_TEST_SESSION") == mark:
                        found.append(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    assert _gone(servers), "a managed server outlived its Ray actor"
