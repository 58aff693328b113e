"""Shared fixtures. Real-path fixtures (models, server) are session-scoped and cheap to reuse."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from slamkit.store import Store  # noqa: E402

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store(tmp_path / "test.duckdb")
    yield st
    st.close()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    from slamkit.catalog import smollm2_path

    return smollm2_path()


@pytest.fixture(scope="session")
def gemma() -> Path:
    from slamkit.catalog import gemma_path

    return gemma_path()


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
