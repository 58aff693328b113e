"""The managed llama.cpp server and its backend, on real parts: xllamacpp's server, SmolLM2.

* Same prompt, same stops: greedy text through the server equals the in-process text.
* Two requests in flight keep both slots busy.
* No server outlives its driver: after stop, after an exception inside ``with``, after
  SIGKILL of the driver (and a llama-server dies with its wrapper), and a pidfile of a
  dead owner is reaped without ever killing a reused pid.
* A bad model file, a bad binary and a dead server are one-line errors saying what to do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from slamkit.backends.base import Backend, Sampling
from slamkit.backends.llamacpp import LlamaCppBackend
from slamkit.backends.serve_child import MODULE
from slamkit.backends.server import (
    ManagedServer,
    ServerBackend,
    reap_stale_servers,
    servers_dir,
)
from slamkit.errors import BackendError, ModelNotFoundError

ROOT = Path(__file__).resolve().parents[1]
#: AlpacaEval-like instructions (one with a system message)
PROMPTS = [
    [{"role": "user", "content": "How did US states get their names?"}],
    [{"role": "user", "content": "What are some famous actors that started on Broadway?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Explain the game of badminton to a beginner."},
    ],
]
GREEDY = Sampling(max_tokens=32)


def _gone(pid: int | None) -> bool:
    """No such process any more (a zombie waiting for its reaper counts as gone)."""
    if pid is None:
        return True
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(*pids: int | None, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(_gone(p) for p in pids):
            return True
        time.sleep(0.1)
    return all(_gone(p) for p in pids)


@pytest.fixture(scope="module")
def server(smollm2: Path) -> Iterator[ManagedServer]:
    with ManagedServer(smollm2, parallel=2, n_threads=1, n_ctx=2048) as srv:
        yield srv


@pytest.fixture(scope="module")
def backend(server: ManagedServer, smollm2: Path) -> Iterator[ServerBackend]:
    be = ServerBackend(server, smollm2)
    yield be
    be.close()


@pytest.fixture(scope="module")
def inproc(smollm2: Path) -> Iterator[LlamaCppBackend]:
    with LlamaCppBackend(smollm2, n_threads=1) as be:
        yield be


@pytest.mark.slow
def test_greedy_text_through_the_server_equals_in_process(
    server: ManagedServer, backend: ServerBackend, inproc: LlamaCppBackend
) -> None:
    assert isinstance(backend, Backend)
    assert backend.chat_format == inproc.chat_format == "gguf-template"
    assert backend.load_time_s == server.load_time_s and server.load_time_s > 0
    for messages in PROMPTS:
        got = backend.generate(messages, GREEDY, seed=0)
        want = inproc.generate(messages, GREEDY, seed=0)
        assert got.text == want.text, messages
        assert (got.prompt_tokens, got.completion_tokens, got.finish_reason) == (
            want.prompt_tokens,
            want.completion_tokens,
            want.finish_reason,
        )
        assert got.chat_format == want.chat_format
        assert 0 < got.ttft_s <= got.latency_s  # type: ignore[operator]
        assert got.prefill_tps and got.decode_tps and got.extra["timings"] == "server"
        assert got.extra["n_p_eval"] == got.prompt_tokens  # cache_prompt off: full prefill
        assert got.extra["slot"] in (0, 1)
        assert got.extra["peak_rss_mb"] >= got.extra["model_mem_mb"] > 0
    info = server.info()
    assert info["server"] == "xllamacpp" and info["server_version"]
    assert (info["parallel"], info["n_threads"], info["n_ctx_per_slot"]) == (2, 1, 2048)
    assert info["continuous_batching"] is True and info["binary"] is None
    assert server.base_url.startswith("http://127.0.0.1:") and server.rss_mb()


@pytest.mark.slow
def test_an_answer_that_ends_itself_stops_like_in_process(
    backend: ServerBackend, inproc: LlamaCppBackend
) -> None:
    hi = [{"role": "user", "content": "Say hi"}]
    got = backend.generate(hi, Sampling(max_tokens=64), seed=0)
    want = inproc.generate(hi, Sampling(max_tokens=64), seed=0)
    assert got.finish_reason == want.finish_reason == "stop"  # the end-of-turn token
    assert got.text == want.text and "<|im_end|>" not in got.text
    assert got.completion_tokens == want.completion_tokens
    assert got.extra["timings"] == "server"  # the server stopped there too


@pytest.mark.slow
def test_stops_only_the_client_knows_close_the_stream(
    server: ManagedServer, smollm2: Path, inproc: LlamaCppBackend
) -> None:
    """A stop token that is not end-of-generation and a stop string: cut here exactly as
    in process; the stream is closed and the slot is free for the next request."""
    messages = PROMPTS[0]
    with ServerBackend(server, smollm2) as be:
        try:
            for stops in (["."], ["federal republic"]):
                be.prompt.extra_stops = inproc.prompt.extra_stops = stops
                got = be.generate(messages, GREEDY, seed=0)
                want = inproc.generate(messages, GREEDY, seed=0)
                assert got.text == want.text and got.finish_reason == want.finish_reason
                assert got.finish_reason == "stop" and stops[0] not in got.text
                assert got.extra["timings"] == "client" and got.prefill_tps is None
        finally:
            inproc.prompt.extra_stops = []
        again = be.generate(messages, Sampling(max_tokens=4), seed=0)
        assert again.completion_tokens == 4 and again.finish_reason == "length"


@pytest.mark.slow
def test_two_requests_in_flight_keep_both_slots_busy(backend: ServerBackend) -> None:
    spans: list[tuple[float, float]] = []

    def one(messages: list[dict[str, str]]) -> object:
        t0 = time.monotonic()
        res = backend.generate(messages, GREEDY, seed=0)
        spans.append((t0, time.monotonic()))
        return res

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, PROMPTS[:2]))
    assert all(r.text and r.completion_tokens == 32 for r in results)  # type: ignore[attr-defined]
    assert {r.extra["slot"] for r in results} == {0, 1}  # type: ignore[attr-defined]
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # both in flight at once


# -- lifecycle -------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_process_or_pidfile_after_stop_or_an_exception(smollm2: Path) -> None:
    srv = ManagedServer(smollm2, parallel=1, n_threads=1, n_ctx=512)
    with srv:
        pid = srv.pid
        pidfile = servers_dir() / f"{srv.wrapper_pid}.json"
        assert pid and not _gone(pid) and pidfile.exists()
        assert json.loads(pidfile.read_text())["owner_pid"] == os.getpid()
    assert _gone(pid) and not pidfile.exists()
    srv.stop()  # idempotent
    with pytest.raises(RuntimeError, match="boom"):
        with ManagedServer(smollm2, parallel=1, n_threads=1, n_ctx=512) as srv2:
            pid = srv2.pid
            raise RuntimeError("boom")
    assert _gone(pid) and list(servers_dir().glob("*.json")) == []


@pytest.mark.slow
def test_a_dead_server_mid_run_is_a_clear_error(smollm2: Path) -> None:
    with ManagedServer(smollm2, parallel=1, n_threads=1, n_ctx=512) as srv:
        be = ServerBackend(srv, smollm2)
        assert be.generate(PROMPTS[0], Sampling(max_tokens=2), seed=0).text
        os.kill(srv.pid, signal.SIGKILL)  # type: ignore[arg-type]
        assert _wait_gone(srv.pid)
        with pytest.raises(BackendError) as err:
            be.generate(PROMPTS[0], Sampling(max_tokens=2), seed=0)
        be.close()
    msg = str(err.value)
    assert msg.startswith(f"{smollm2.name}: the llama.cpp server at {srv.base_url} has exited")
    assert "start the server again and rerun" in msg and "\n" not in msg


DRIVER = """
import sys, time
from slamkit.backends.server import ManagedServer
srv = ManagedServer(sys.argv[1], parallel=1, n_threads=1, n_ctx=512,
                    binary=sys.argv[2] or None, startup_timeout_s=60).start()
print(srv.wrapper_pid, srv.pid, flush=True)
time.sleep(600)
"""


def _fake_llama_server(folder: Path) -> Path:
    """A "llama-server" executable: parses llama-server's flags, serves with xllamacpp."""
    path = folder / "llama-server"
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import argparse, json, os, sys, time
            from pathlib import Path
            ap = argparse.ArgumentParser()
            ap.add_argument("-m", required=True)
            ap.add_argument("--host", required=True)
            ap.add_argument("--port", type=int, required=True)
            ap.add_argument("-np", "--parallel", type=int, required=True)
            ap.add_argument("-t", type=int, required=True)
            ap.add_argument("-tb", type=int, required=True)
            ap.add_argument("-ngl", type=int, required=True)
            ap.add_argument("-c", type=int, required=True)
            ap.add_argument("--cont-batching", action="store_true")
            ap.add_argument("--flash-attn", choices=["on", "off", "auto"], default="auto")
            a = ap.parse_args()
            assert a.host == "127.0.0.1"
            Path(__file__).with_suffix(".args.json").write_text(json.dumps(sys.argv[1:]))
            import xllamacpp as x
            p = x.CommonParams()
            p.model.path = a.m
            p.n_parallel = a.parallel
            p.n_ctx = a.c
            p.cpuparams.n_threads = a.t
            p.cpuparams_batch.n_threads = a.tb
            p.n_gpu_layers = a.ngl
            p.cont_batching = a.cont_batching
            p.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[a.flash_attn]
            p.port = a.port
            p.hostnames = [a.host]
            server = x.Server(p)
            while True:
                time.sleep(3600)
            """
        ),
        encoding="utf-8",
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "sig"),
    [("xllamacpp", signal.SIGKILL), ("llama-server", signal.SIGKILL), ("xllamacpp", signal.SIGINT)],
    ids=["sigkill", "sigkill-llama-server", "ctrl-c"],
)
def test_a_driver_that_dies_takes_its_server_down(
    smollm2: Path, tmp_path: Path, mode: str, sig: signal.Signals
) -> None:
    """SIGKILL (no atexit, no finally in the driver) or Ctrl-C (SIGINT to the driver's
    process group, as a terminal sends it) of a driver: its server goes too."""
    binary = str(_fake_llama_server(tmp_path)) if mode == "llama-server" else ""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(smollm2), binary],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert driver.stdout is not None
        line = driver.stdout.readline()
        assert line, driver.stderr.read() if driver.stderr else "driver died"
        wrapper, pid = (int(x) for x in line.split())
        assert not _gone(wrapper) and not _gone(pid)
        assert (pid == wrapper) == (mode == "xllamacpp")
        if binary:
            assert "llama-server" in " ".join(psutil.Process(pid).cmdline())
        os.killpg(driver.pid, sig)
        driver.wait(timeout=30)
    finally:
        driver.kill()
        driver.wait()
    assert _wait_gone(wrapper, pid), "the server outlived its driver"
    pidfile = servers_dir() / f"{wrapper}.json"
    if sig == signal.SIGKILL:  # the driver had no chance to remove its pidfile
        assert pidfile.exists()
        assert reap_stale_servers() == []  # nothing left to kill: the next start tidies up
    assert not pidfile.exists()


@pytest.mark.slow
def test_llama_server_binary_gets_its_flags_and_dies_with_its_wrapper(
    smollm2: Path, tmp_path: Path
) -> None:
    fake = _fake_llama_server(tmp_path)
    with ManagedServer(smollm2, parallel=2, n_threads=1, n_ctx=256, binary=fake) as srv:
        args = json.loads(fake.with_suffix(".args.json").read_text())
        flags = dict(zip(args[::2], args[1::2], strict=False))
        assert flags["-m"] == str(smollm2.resolve()) and flags["--host"] == "127.0.0.1"
        assert flags["--port"] == str(srv.port) and flags["-np"] == "2"
        assert (flags["-t"], flags["-tb"], flags["-ngl"], flags["-c"]) == ("1", "1", "0", "512")
        assert "--cont-batching" in args
        info = srv.info()
        assert info["server"] == "llama-server" and info["binary"] == str(fake.resolve())
        assert srv.pid != srv.wrapper_pid and srv.rss_mb()
        with ServerBackend(srv, smollm2) as be:
            res = be.generate(PROMPTS[0], Sampling(max_tokens=3), seed=0)
            assert res.completion_tokens == 3 and res.extra["server"] == "llama-server"
        pid = srv.pid
        os.kill(srv.wrapper_pid, signal.SIGKILL)  # type: ignore[arg-type]
        assert _wait_gone(pid), "llama-server outlived its wrapper (PR_SET_PDEATHSIG)"
    assert list(servers_dir().glob("*.json")) == []


def _spawn_lookalike() -> subprocess.Popen[bytes]:
    """A process whose command line looks like a server wrapper's, in its own group."""
    return subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)", MODULE],
        start_new_session=True,
    )


def _write_pidfile(wrapper: int, wrapper_started: float, owner: int, owner_started: float) -> Path:
    folder = servers_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{wrapper}.json"
    rec = {
        "wrapper_pid": wrapper, "wrapper_started": wrapper_started,
        "server_pid": wrapper, "server_started": wrapper_started,
        "owner_pid": owner, "owner_started": owner_started,
        "host": socket.gethostname(), "model": "m.gguf", "port": 1, "log": None,
    }  # fmt: skip
    path.write_text(json.dumps(rec), encoding="utf-8")
    return path


def test_a_server_of_a_dead_owner_is_reaped_and_a_reused_pid_is_not() -> None:
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    owner_started = psutil.Process(owner.pid).create_time()
    owner.kill()
    owner.wait()
    orphan, reused, kept = _spawn_lookalike(), _spawn_lookalike(), _spawn_lookalike()
    try:
        started = {p.pid: psutil.Process(p.pid).create_time() for p in (orphan, reused, kept)}
        stale = _write_pidfile(orphan.pid, started[orphan.pid], owner.pid, owner_started)
        # the pid is alive, but it is not the process that was recorded: never kill it
        wrong = _write_pidfile(reused.pid, started[reused.pid] - 100, owner.pid, owner_started)
        me = psutil.Process().create_time()
        live = _write_pidfile(kept.pid, started[kept.pid], os.getpid(), me)
        assert reap_stale_servers() == [orphan.pid]
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert reused.poll() is None and kept.poll() is None
        assert not stale.exists() and not wrong.exists() and live.exists()
        assert reap_stale_servers() == []
    finally:
        for p in (orphan, reused, kept):
            p.kill()
            p.wait()


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_broken_model_file_is_a_clear_start_error(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"NOTAGGUF" + os.urandom(4096))
    srv = ManagedServer(bad, parallel=1, n_threads=1, n_ctx=256)
    with pytest.raises(BackendError) as err:
        srv.start()
    msg = str(err.value)
    assert msg.startswith("broken.gguf: the llama.cpp server (xllamacpp)"), msg
    assert "did not start (gguf_init_from_reader: invalid magic characters" in msg
    assert f"— check the file with `slamkit catalog --path {bad}`" in msg
    assert "its log: " in msg and "\n" not in msg
    assert _gone(srv.wrapper_pid) and not srv.alive()
    assert list(servers_dir().glob("*.json")) == []
    with pytest.raises(ModelNotFoundError, match="nothere.gguf does not exist"):
        ManagedServer(tmp_path / "nothere.gguf")


def test_a_bad_binary_is_a_clear_error_naming_it(smollm2: Path, tmp_path: Path) -> None:
    missing = tmp_path / "bin" / "llama-server"
    with pytest.raises(BackendError) as err:
        ManagedServer(smollm2, binary=missing)
    assert str(err.value).startswith(
        f"{smollm2.name}: the llama-server binary {missing} does not exist — pass the path"
    )
    plain = tmp_path / "llama-server"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(BackendError, match=f"binary {plain} is not an executable file"):
        ManagedServer(smollm2, binary=plain)
    with pytest.raises(BackendError, match="is not an executable file"):
        ManagedServer(smollm2, binary=tmp_path)


def test_a_backend_needs_a_running_server_of_its_own_model(smollm2: Path, tmp_path: Path) -> None:
    srv = ManagedServer(smollm2, parallel=1)
    with pytest.raises(BackendError, match="server is not running — start it first"):
        ServerBackend(srv, smollm2)
    with pytest.raises(ModelNotFoundError):
        ServerBackend(srv, tmp_path / "nothere.gguf")
