"""Shared fixtures. Real-path fixtures (models, server) are session-scoped and cheap to reuse.

No test reads or writes the user's ~/.cache: before slamkit or the Hugging Face libraries
are imported (they read these variables at import time) the process's caches point at a
session folder, and the autouse fixture :func:`isolated_cache` gives every test its own
slamkit cache (``$SLAMKIT_CACHE_DIR``), ``$XDG_CACHE_HOME`` and ``$HF_HOME``. The one
expensive file, Gemma joined from its part packages, is materialised once per session in
:data:`SHARED_MODELS`, which each test's ``<cache>/models`` links to.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

#: this session's caches (removed at exit): the process-wide defaults and the shared models
SESSION_CACHE = Path(tempfile.mkdtemp(prefix="slamkit-test-cache-"))
_SESSION_PID = os.getpid()
#: Gemma is joined here once per session; every test's ``<slamkit cache>/models`` links here
SHARED_MODELS = SESSION_CACHE / "models"
SHARED_MODELS.mkdir()
#: sha256 index of the default model files (written by the smollm2 / gemma fixtures) that
#: seeds each test's cache, so 350 MB are not re-hashed per test
_SEED_INDEX = SESSION_CACHE / "seed" / "sha256.json"
#: cache locations that derive from HF_HOME / XDG_CACHE_HOME unless set: unset in tests
_DERIVED_CACHE_VARS = (
    "HF_DATASETS_CACHE", "HF_EVALUATE_CACHE", "HF_METRICS_CACHE", "HF_MODULES_CACHE",
    "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HF_XET_CACHE",
    "TRANSFORMERS_CACHE", "SENTENCE_TRANSFORMERS_HOME",
)  # fmt: skip


def _cache_env(root: Path) -> dict[str, str]:
    return {
        "SLAMKIT_CACHE_DIR": str(root / "slamkit"),
        "XDG_CACHE_HOME": str(root / "xdg"),
        "HF_HOME": str(root / "huggingface"),
    }


for _var in _DERIVED_CACHE_VARS:
    os.environ.pop(_var, None)
os.environ.update(_cache_env(SESSION_CACHE))

from helpers import write_slam_dir  # noqa: E402

from slamkit.catalog import file_sha256  # noqa: E402
from slamkit.store import Store  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"


#: every process this test session starts inherits this marker (servers, Ray workers)
_SESSION_MARK = f"{os.getpid()}-{time.time_ns()}"
os.environ["SLAMKIT_TEST_SESSION"] = _SESSION_MARK
#: what a leftover process of ours looks like: managed llama.cpp servers, Ray's processes
_LEFTOVERS = ("slamkit.backends.serve_child", "raylet", "gcs_server", "ray::", "default_worker")


def _leftovers() -> list[str]:
    """Processes this test session started (directly or not) that still run."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.pid == os.getpid() or not any(k in cmd for k in _LEFTOVERS):
                continue
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if p.environ().get("SLAMKIT_TEST_SESSION") == _SESSION_MARK:
                found.append(f"pid {p.pid}: {cmd[:160]}")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No managed server and no Ray process may outlive the test suite (the run fails,
    naming them). Ray's helper processes of a SIGKILLed driver take up to ~2 minutes to
    notice; servers a few seconds."""
    if os.getpid() != _SESSION_PID:
        return
    deadline = time.time() + 180
    left = _leftovers()
    while left and time.time() < deadline:
        time.sleep(1)
        left = _leftovers()
    if left:
        print("\nprocesses started by the tests outlived them:\n  " + "\n  ".join(left))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    if os.getpid() == _SESSION_PID:  # not in a forked child that happens to run hooks
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own caches; returns its slamkit cache folder (``cache_dir()``).

    ``<cache>/models`` is a link to :data:`SHARED_MODELS` (Gemma is not re-joined per test)
    and ``<cache>/sha256.json`` starts with the default models' hashes only. A separate
    folder from ``tmp_path``, so tests that expect an empty ``tmp_path`` still see one.
    """
    root = tmp_path_factory.mktemp("cache")
    env = _cache_env(root)
    slamkit_cache = Path(env["SLAMKIT_CACHE_DIR"])
    slamkit_cache.mkdir()
    (slamkit_cache / "models").symlink_to(SHARED_MODELS, target_is_directory=True)
    if _SEED_INDEX.exists():
        shutil.copyfile(_SEED_INDEX, slamkit_cache / "sha256.json")
    for var in _DERIVED_CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    return slamkit_cache


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store(tmp_path / "test.duckdb")
    yield st
    st.close()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from slamkit.catalog import smollm2_path

    path = smollm2_path()
    file_sha256(path, _SEED_INDEX.parent)
    return path


@pytest.fixture(scope="session")
def gemma() -> Path:
    """Gemma-3-270M joined once per session into :data:`SHARED_MODELS`."""
    from slamkit.catalog import gemma_path

    path = gemma_path(SHARED_MODELS)
    file_sha256(path, _SEED_INDEX.parent)
    return path


@pytest.fixture()
def slam_dir(tmp_path: Path) -> Path:
    """A folder of SLaM tool files: a use case, a human evaluation and a run."""
    return write_slam_dir(tmp_path / "slam")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def llama_server(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``python -m llama_cpp.server`` on 127.0.0.1 serving SmolLM2; yields base_url."""
    import urllib.request

    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "llama_cpp.server",
                "--model", str(smollm2), "--model_alias", "smollm2",
                "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1",
                "--seed", "0",
                # answer concurrent requests one after another instead of cutting off the
                # running stream when the next one arrives (its default)
                "--interrupt_requests", "False",
            ],
            stdout=fh, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(base_url + "/models", timeout=2).read()
            break
        except OSError as exc:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                tail = log.read_text()[-3000:]
                raise RuntimeError(f"llama_cpp.server did not start:\n{tail}") from exc
            time.sleep(0.5)
    yield base_url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
