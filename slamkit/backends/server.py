"""A local llama.cpp server that slamkit starts and stops, and the backend that talks to it.

:class:`ManagedServer` runs llama.cpp's own HTTP server (parallel slots, continuous
batching) for one GGUF on 127.0.0.1: the one embedded in ``xllamacpp`` by default, or a
``llama-server`` executable (``binary=``). :class:`ServerBackend` sends it the prompt
tokens the in-process backend would use (the same :class:`~slamkit.backends.llamacpp.
ChatPrompt`, over a vocabulary-only copy of the GGUF) and cuts the answer with the same
stops, so a text difference between the two executors comes from numerics only. It is
safe to call from many threads at once: N requests in flight keep N slots busy.

No server outlives its driver. The server runs under a small wrapper process
(:mod:`slamkit.backends.serve_child`) in a session of its own, whose stdin is a pipe
held by this process: when this process ends, however it ends (return, exception,
Ctrl-C, SIGKILL), the kernel closes that pipe and the wrapper takes the server down with
it (a ``llama-server`` child also gets SIGKILL from the kernel when the wrapper dies). A
pidfile per server in ``cache_dir() / "servers"`` records its owner; the next start
kills any server whose owner is gone (:func:`reap_stale_servers`).

>>> with ManagedServer(smollm2_path(), parallel=2, n_threads=1) as srv:  # doctest: +SKIP
...     be = ServerBackend(srv, smollm2_path())
...     be.generate([{"role": "user", "content": "Hi"}], Sampling(max_tokens=16), seed=0)
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from slamkit.backends.base import GenerationResult, Sampling, check_whole
from slamkit.backends.llamacpp import (
    _LOAD_LOCK,
    ChatPrompt,
    _capture_llama_log,
    _suggest_from_header,
    _tolerant_gguf_templates,
    check_chat_format,
    check_model_path,
    default_threads,
    fit_prompt,
    gguf_label,
    one_line,
    template_message,
)
from slamkit.backends.serve_child import MODULE
from slamkit.errors import BackendError, MissingDependencyError

#: llama-cpp-python's sampler chain in ``Llama.generate`` (penalties over the last 64
#: tokens, top-k, typical, top-p, min-p, temperature), asked of the server by name
SAMPLERS = ["penalties", "top_k", "typ_p", "top_p", "min_p", "temperature"]
#: ``Llama(last_n_tokens_size=64)``: the window the repeat penalty looks at
REPEAT_LAST_N = 64
#: how many server logs to keep in ``cache_dir() / "servers"``
KEEP_LOGS = 20
_BIND_FAILED = re.compile(r"couldn't bind|address already in use", re.I)


def servers_dir() -> Path:
    """Where pidfiles and logs of managed servers live: ``cache_dir() / "servers"``."""
    from slamkit.catalog import cache_dir

    return cache_dir() / "servers"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _started(pid: int) -> float | None:
    """When process ``pid`` started (psutil's create_time), None when there is none."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None


def _same_process(pid: int | None, started: float | None) -> bool:
    """``pid`` is still the process that started at ``started`` (not a reused pid)."""
    if not pid or started is None:
        return False
    now = _started(pid)
    return now is not None and abs(now - started) < 0.05


def _cmdline(pid: int) -> list[str]:
    import psutil

    try:
        return list(psutil.Process(pid).cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _kill(pid: int, group: bool = False) -> bool:
    """SIGKILL ``pid`` (its process group with ``group``); False when it was gone."""
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _pid(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def reap_stale_servers() -> list[int]:
    """Kill managed servers whose owning (driver) process is gone; returns the pids killed.

    Reads every pidfile in :func:`servers_dir` written on this host. A server is killed
    only while its owner is gone *and* the process is still the one recorded (same start
    time, and the wrapper's command line is slamkit's), so a reused pid is never touched.
    Pidfiles of servers that are gone are removed. :meth:`ManagedServer.start` calls it.
    """
    folder = servers_dir()
    killed: list[int] = []
    if not folder.is_dir():
        return killed
    host = socket.gethostname()
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(rec, dict):
                continue
        except (OSError, ValueError):
            continue  # being written (files are renamed into place) or not ours
        if rec.get("host") != host:
            continue
        wrapper, server = _pid(rec.get("wrapper_pid")), _pid(rec.get("server_pid"))
        running = [
            pid
            for pid, started in ((wrapper, rec.get("wrapper_started")),
                                 (server, rec.get("server_started")))
            if pid and _same_process(pid, started)
        ]  # fmt: skip
        if not running:
            path.unlink(missing_ok=True)  # nothing left of that server
            continue
        if _same_process(rec.get("owner_pid"), rec.get("owner_started")):
            continue  # its driver is alive: not stale
        if (
            wrapper
            and _same_process(wrapper, rec.get("wrapper_started"))
            and any(MODULE in part for part in _cmdline(wrapper))
            and _kill(wrapper, group=True)
        ):
            killed.append(wrapper)
        if (
            server
            and server != wrapper
            and _same_process(server, rec.get("server_started"))
            and _kill(server)
        ):
            killed.append(server)
        path.unlink(missing_ok=True)
    return killed


#: servers started by this process, stopped at exit (stdin EOF would end them anyway)
_LIVE: weakref.WeakSet[ManagedServer] = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    for srv in list(_LIVE):
        if srv._owner_pid == os.getpid():  # not in a forked child: the parent owns them
            srv.stop()


class _PortTaken(Exception):
    """The server could not bind its port (another process took it first)."""


def check_binary(binary: str | Path, label: str) -> Path:
    """The resolved path of a ``llama-server`` executable (a name on PATH or a path), or
    BackendError starting with ``label`` saying what is wrong and what to do."""
    text = str(binary)
    found = shutil.which(text) if os.sep not in text else None
    path = Path(found or text).expanduser()
    fix = (
        "pass the path of a llama-server executable (built from llama.cpp with "
        "`cmake --build build -t llama-server`), or leave it out (binary=None) for the "
        "llama.cpp bundled with xllamacpp"
    )
    if not path.exists():
        raise BackendError(f"{label}: the llama-server binary {path} does not exist — {fix}.")
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BackendError(
            f"{label}: the llama-server binary {path} is not an executable file "
            f"— make it executable (chmod +x {path}) or {fix}."
        )
    return path.resolve()


class ManagedServer:
    """llama.cpp's HTTP server for one GGUF, on 127.0.0.1, owned by this process.

    ``parallel`` slots of ``n_ctx`` tokens each, continuous batching, ``n_threads``
    threads (``n_threads_batch`` for prefill; default: half the cores, as in process).
    Flash attention is off unless ``flash_attn=True``, as in the in-process backend: with
    it on, llama.cpp's CPU kernels round differently and greedy text drifts apart after a
    few dozen tokens.
    ``binary=None`` serves with the llama.cpp embedded in ``xllamacpp``; a path (or a
    name on ``$PATH``) runs that ``llama-server`` executable instead. ``start()`` waits
    until ``/health`` answers ok and raises a one-line BackendError naming the model
    file, llama.cpp's reason (from the server's log, whose path it gives) and what to do;
    it never leaves a process behind. ``stop()`` is idempotent; ``with`` does both.
    """

    def __init__(
        self,
        model_path: str | Path,
        *,
        name: str | None = None,
        parallel: int = 2,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_gpu_layers: int = 0,
        n_ctx: int = 2048,
        binary: str | Path | None = None,
        startup_timeout_s: float = 120.0,
        flash_attn: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        self.label = gguf_label(self.model_path, name)
        self.name = name or self.model_path.stem
        check_whole(f"parallel of {self.label}", parallel, 1, "the number of slots")
        check_whole(f"n_ctx of {self.label}", n_ctx, 16, "context tokens per slot")
        if n_threads is not None:
            check_whole(f"n_threads of {self.label}", n_threads, 1)
        if n_threads_batch is not None:
            check_whole(f"n_threads_batch of {self.label}", n_threads_batch, 1)
        check_model_path(self.model_path)
        self.parallel = parallel
        self.n_threads = n_threads or default_threads()
        self.n_threads_batch = n_threads_batch or self.n_threads
        self.n_gpu_layers = n_gpu_layers
        self.n_ctx = n_ctx
        self.flash_attn = bool(flash_attn)
        self.startup_timeout_s = startup_timeout_s
        self.binary = self._check_binary(binary) if binary is not None else None
        self.port: int | None = None
        self.base_url = ""
        self.pid: int | None = None
        self.wrapper_pid: int | None = None
        self.load_time_s: float | None = None
        self.log_path: Path | None = None
        self.server_version: str | None = None
        self.props: dict[str, Any] = {}
        self.peak_rss_mb: float | None = None
        #: the wrapper's own memory before loading (xllamacpp), so that
        #: ``peak_rss_mb - rss_baseline_mb`` is what the model and its caches take
        self.rss_baseline_mb = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfile: Path | None = None
        self._server_started: float | None = None
        self._owner_pid = os.getpid()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self.base_url or "not started"
        return f"ManagedServer({self.label!r}, parallel={self.parallel}, {where})"

    # -- set-up ----------------------------------------------------------------------
    def _check_binary(self, binary: str | Path) -> Path:
        return check_binary(binary, self.label)

    @property
    def kind(self) -> str:
        """Which server: ``"xllamacpp"`` or ``"llama-server"``."""
        return "llama-server" if self.binary else "xllamacpp"

    def _command(self, port: int) -> list[str]:
        cmd = [
            sys.executable, "-m", MODULE,
            "--model", str(self.model_path.resolve()),
            "--port", str(port),
            "--parallel", str(self.parallel),
            "--threads", str(self.n_threads),
            "--threads-batch", str(self.n_threads_batch),
            "--n-gpu-layers", str(self.n_gpu_layers),
            "--ctx-per-slot", str(self.n_ctx),
            "--flash-attn", "on" if self.flash_attn else "off",
        ]  # fmt: skip
        return cmd + (["--binary", str(self.binary)] if self.binary else [])

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> ManagedServer:
        """Start the server and wait until it is healthy (a no-op when it runs)."""
        if self._proc is not None:
            return self
        if not self.binary and importlib.util.find_spec("xllamacpp") is None:
            raise MissingDependencyError(
                f"{self.label}: the llama.cpp server needs 'xllamacpp', which is not "
                "installed — install it with: pip install xllamacpp (or pass binary= a "
                "llama-server executable)."
            )
        try:
            reap_stale_servers()
        except Exception:  # never let cleaning up after others stop this start
            pass
        t0 = time.perf_counter()
        deadline = time.monotonic() + self.startup_timeout_s
        try:
            for attempt in range(3):
                self._spawn(_free_port())
                try:
                    self._wait_healthy(deadline)
                    break
                except _PortTaken:
                    self.stop()
                    if attempt == 2:
                        raise self._start_error("no free port on 127.0.0.1 after 3 tries") from None
            self.load_time_s = time.perf_counter() - t0
            self._after_start()
        except BaseException:
            self.stop()  # never leave a process behind (Ctrl-C included)
            raise
        return self

    def _spawn(self, port: int) -> None:
        folder = servers_dir()
        folder.mkdir(parents=True, exist_ok=True)
        _prune_logs(folder)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        self.log_path = folder / f"{self.model_path.stem}.{stamp}.{port}.log"
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        # the wrapper must import this very slamkit, wherever the driver runs from
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self._command(port),
                stdin=subprocess.PIPE,  # the lifeline: EOF when this process is gone
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group; no Ctrl-C from the terminal
                env=env,
                close_fds=True,
            )
        self._owner_pid = os.getpid()
        _LIVE.add(self)
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.wrapper_pid = self._proc.pid
        self.pid = self._proc.pid if not self.binary else None
        self._server_started = None
        self._pidfile = folder / f"{self._proc.pid}.json"
        self._write_pidfile()

    def _write_pidfile(self) -> None:
        if self._proc is None or self._pidfile is None:
            return
        rec = {
            "wrapper_pid": self._proc.pid,
            "wrapper_started": _started(self._proc.pid),
            "server_pid": self.pid,
            "server_started": self._server_started or _started(self.pid or 0),
            "owner_pid": os.getpid(),
            "owner_started": _started(os.getpid()),
            "host": socket.gethostname(),
            "model": str(self.model_path),
            "server": self.kind,
            "binary": str(self.binary) if self.binary else None,
            "port": self.port,
            "log": str(self.log_path),
        }
        tmp = self._pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(rec), encoding="utf-8")
        tmp.replace(self._pidfile)  # readers never see half a file

    def _wait_healthy(self, deadline: float) -> None:
        import httpx

        assert self._proc is not None
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                code = self._proc.poll()
                if code is not None:
                    if _BIND_FAILED.search(self.log_tail(40)):
                        raise _PortTaken()
                    raise self._start_error(f"the server process exited with code {code}")
                if self.binary and self.pid is None:
                    self._find_server_pid()
                try:
                    r = client.get(f"{self.base_url}/health")
                    if r.status_code == 200 and r.json().get("status") == "ok":
                        return
                except (httpx.HTTPError, ValueError):
                    pass  # not listening yet, or still loading (503)
                if time.monotonic() > deadline:
                    raise self._start_error(
                        f"no healthy answer on /health within {self.startup_timeout_s:g} s",
                        timeout=True,
                    )
                time.sleep(0.1)

    def _find_server_pid(self) -> None:
        """The llama-server child of the wrapper (binary mode), recorded in the pidfile."""
        import psutil

        if self.wrapper_pid is None:
            return
        try:
            children = psutil.Process(self.wrapper_pid).children()
        except psutil.NoSuchProcess:
            return
        if children:
            self.pid = children[0].pid
            self._server_started = _started(self.pid)
            self._write_pidfile()

    def _after_start(self) -> None:
        import httpx

        if self.binary and self.pid is None:
            self._find_server_pid()
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            try:
                props = client.get(f"{self.base_url}/props").json()
                self.props = props if isinstance(props, dict) else {}
            except (httpx.HTTPError, ValueError):
                self.props = {}
        if self.binary:
            build = self.props.get("build_info")
            self.server_version = str(build) if build else None
        else:
            from importlib.metadata import PackageNotFoundError, version

            try:
                self.server_version = version("xllamacpp")
            except PackageNotFoundError:  # pragma: no cover - imported, so installed
                self.server_version = None
        m = re.search(r"rss_before_load_mb=([0-9.]+)", self.log_tail(400))
        self.rss_baseline_mb = float(m.group(1)) if m and not self.binary else 0.0
        self.rss_mb()

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 5 s) and remove its pidfile; idempotent."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        _LIVE.discard(self)
        try:
            if proc.stdin is not None:
                proc.stdin.close()  # the wrapper stops its server at EOF
        except OSError:
            pass
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the group: wrapper and its server
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill(proc.pid, group=True)
                proc.wait()
        if self.pid and self.pid != proc.pid and _same_process(self.pid, self._server_started):
            _kill(self.pid)  # a llama-server that somehow outlived its wrapper
        if self._pidfile is not None:
            self._pidfile.unlink(missing_ok=True)
            self._pidfile.with_suffix(".tmp").unlink(missing_ok=True)

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -------------------------------------------------------------------------
    def alive(self) -> bool:
        """The server process runs (started and not exited)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def exit_code(self) -> int | None:
        """The wrapper's exit code once it has exited (None while it runs)."""
        proc = self._proc
        return proc.poll() if proc is not None else None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log ("" before it started)."""
        if self.log_path is None:
            return ""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 256 * lines))
                data = fh.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(data.splitlines()[-lines:])

    def info(self) -> dict[str, Any]:
        """Provenance of the server, for the run row."""
        return {
            "server": self.kind,
            "server_version": self.server_version,
            "binary": str(self.binary) if self.binary else None,
            "parallel": self.parallel,
            "n_threads": self.n_threads,
            "n_threads_batch": self.n_threads_batch,
            "n_gpu_layers": self.n_gpu_layers,
            "n_ctx_per_slot": self.n_ctx,
            "continuous_batching": True,
            "flash_attn": self.flash_attn,
        }

    def rss_mb(self) -> float | None:
        """Resident memory of the server process (MiB), None when it is not running;
        the largest value seen is kept in :attr:`peak_rss_mb`."""
        import psutil

        if self.pid is None or not self.alive():
            return None
        try:
            rss = float(psutil.Process(self.pid).memory_info().rss) / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        with self._lock:
            self.peak_rss_mb = max(self.peak_rss_mb or 0.0, rss)
        return rss

    # -- messages ----------------------------------------------------------------------
    def _start_error(self, what: str, timeout: bool = False) -> BackendError:
        """``<model>: the llama.cpp server did not start (<reason>) — <fix>; log: <path>``."""
        tail = self.log_tail(60)
        reason, hint = _failure_reason(tail, self.model_path)
        if timeout:
            hint = (
                f"raise startup_timeout_s (now {self.startup_timeout_s:g} s) if the model is "
                "large, or see the log"
            )
            reason = what + (f"; last log line: {reason}" if reason else "")
        elif reason is None:
            last = [one_line(ln, 120) for ln in tail.splitlines() if ln.strip()][-3:]
            reason = what + (f"; log tail: {' | '.join(last)}" if last else "")
        where = f" (pid {self.wrapper_pid})" if self.wrapper_pid else ""
        return BackendError(
            f"{self.label}: the llama.cpp server ({self.kind}){where} did not start "
            f"({one_line(reason, 220).rstrip('.')}) — {hint}; its log: {self.log_path}."
        )

    def death_note(self) -> str:
        """Why the server is gone, in words (for errors of a backend mid-run)."""
        code = self.exit_code()
        what = "has exited" + (f" with code {code}" if code is not None else "")
        reason, _ = _failure_reason(self.log_tail(60), self.model_path)
        if reason:
            what += f" ({one_line(reason, 160).rstrip('.')})"
        return what


def _prune_logs(folder: Path) -> None:
    logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for old in logs[:-KEEP_LOGS]:
        old.unlink(missing_ok=True)


_LOG_LINE = re.compile(r"^\s*\d+\.\d+\.\d+\.\d+\s+([EWIDT])\s+(.*)$")


def _failure_reason(tail: str, model: Path) -> tuple[str | None, str]:
    """(llama.cpp's reason, what to do) from the tail of a server log.

    >>> _failure_reason("0.00.1.1 E gguf_init: invalid magic", Path("m.gguf"))[0]
    'gguf_init: invalid magic'
    """
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    text = "\n".join(lines)
    arch = re.search(r"unknown model architecture: '([^']*)'", text)
    if arch:
        return (
            f"unknown model architecture '{arch.group(1)}'",
            "use a GGUF of an architecture this llama.cpp supports, or a newer xllamacpp / "
            "llama-server",
        )
    errors = [m.group(2) for ln in lines if (m := _LOG_LINE.match(ln)) and m.group(1) == "E"]
    errors += [
        ln
        for ln in lines
        if not _LOG_LINE.match(ln)
        and re.search(r"\b(error|failed|cannot|unable|not found|denied)\b", ln, re.I)
    ]
    reason = errors[0] if errors else None
    if reason and re.search(r"alloc|out of memory|\bOOM\b", text, re.I):
        return reason, "not enough memory: lower n_ctx, parallel or n_gpu_layers"
    return reason, (
        f"check the file with `slamkit catalog --path {model}`; a file that is damaged or "
        "cut short must be fetched or converted again"
        if reason and re.search(r"gguf|model|tensor", reason, re.I)
        else "see the server's log"
    )


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a server-sent event stream (``data: {...}`` lines)."""
    for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, ": ping" comments
        data = line[5:].strip()
        if data == "[DONE]":
            return
        event = json.loads(data)
        if isinstance(event, dict):
            yield event


class ServerBackend:
    """One GGUF served by a :class:`ManagedServer`, through llama.cpp's ``/completion``.

    Formats the prompt exactly as :class:`~slamkit.backends.llamacpp.LlamaCppBackend`
    (same template, BOS, stops; over a vocabulary-only ``llama_cpp.Llama``, no weights),
    sends its token ids with ``cache_prompt: false`` (a full prefill per request, like
    the in-process reset) and llama-cpp-python's sampler chain, streams the generated
    token ids back and detokenizes and stops them with the same code. ``ttft_s`` is the
    first streamed token as seen here, ``latency_s`` end to end; ``prefill_tps`` and
    ``decode_tps`` are the server's own timings (``extra['timings'] == 'server'``; after a
    stop only this side sees, the stream is closed and ``decode_tps`` is measured here).
    ``generate`` is safe to call from many threads at once. ``close()`` leaves the server
    running: its owner stops it.
    """

    #: many threads may call :meth:`generate` at once (the job engine relies on it)
    thread_safe = True

    def __init__(
        self,
        server: ManagedServer,
        model_path: str | Path,
        *,
        chat_format: str = "auto",
        name: str | None = None,
        n_ctx: int = 2048,
        timeout_s: float = 600.0,
    ) -> None:
        import httpx

        path = Path(model_path)
        self.label = gguf_label(path, name)
        check_chat_format(chat_format, f"chat_format of {self.label}")
        check_model_path(path)
        if not server.alive():
            raise BackendError(
                f"{self.label}: the llama.cpp server is not running — start it first "
                "(`with ManagedServer(...) as srv:` or srv.start())."
            )
        if not _same_file(path, server.model_path):
            raise BackendError(
                f"{self.label}: the server serves {server.model_path.name}, not this model — "
                "pass the server's own model file (its token ids are what is sent)."
            )
        self.server = server
        self.path = path
        self.name = name or path.stem
        self.load_time_s: float | None = server.load_time_s
        self.n_ctx = min(n_ctx, server.n_ctx)
        self.timeout_s = timeout_s
        self.llm = self._load_vocab(path, chat_format)
        try:
            self.prompt = ChatPrompt(self.llm, self.label, chat_format)
        except BaseException:
            self.close()
            raise
        self.chat_format = self.prompt.chat_format
        self._client = httpx.Client(
            base_url=server.base_url,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            trust_env=False,  # never through a proxy: the server is on 127.0.0.1
        )

    def __repr__(self) -> str:
        return f"ServerBackend({self.label!r}, {self.server.base_url})"

    def _load_vocab(self, path: Path, chat_format: str) -> Any:
        import jinja2
        import llama_cpp

        log: list[tuple[int, str]] = []
        tolerant = _tolerant_gguf_templates() if chat_format != "auto" else nullcontext()
        try:
            with _LOAD_LOCK, _capture_llama_log(log), tolerant:
                return llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
        except jinja2.TemplateError as exc:
            suggest = _suggest_from_header(path)
            raise BackendError(template_message(self.label, exc, suggest)) from exc
        except Exception as exc:
            lines = [t.strip() for _, t in log if re.search(r"error|failed", t, re.I)]
            reason = lines[0] if lines else f"{type(exc).__name__}: {exc}"
            raise BackendError(
                f"{self.label}: llama.cpp could not read the model's vocabulary "
                f"({one_line(reason, 200).rstrip('.')}) — check the file with "
                f"`slamkit catalog --path {path}`."
            ) from exc

    # -- errors ------------------------------------------------------------------------
    def _fail(self, cause: str, detail: str, fix: str) -> BackendError:
        detail = one_line(detail, 220).rstrip(".")
        return BackendError(f"{self.label}: {cause} ({detail}) — {fix}.")

    def _broken(self, exc: Exception, tokens: int) -> BackendError:
        import httpx

        srv = self.server
        detail = f"{type(exc).__name__}: {exc}".rstrip(": ")
        if tokens:
            detail += f"; after {tokens} token{'s' if tokens != 1 else ''}"
        if not srv.alive():
            return self._fail(
                f"the llama.cpp server at {srv.base_url} {srv.death_note()}",
                detail,
                f"see its log {srv.log_path}, start the server again and rerun: failed "
                "cells are retried",
            )
        if isinstance(exc, httpx.TimeoutException):
            what = "the answer stalled for more than" if tokens else "no answer within"
            return self._fail(
                f"{what} {self.timeout_s:g} s from the llama.cpp server at {srv.base_url}",
                detail,
                "raise timeout_s, or send fewer requests at once than the server has slots",
            )
        return self._fail(
            f"the connection to the llama.cpp server at {srv.base_url} broke",
            detail,
            f"see its log {srv.log_path} and rerun: failed cells are retried",
        )

    def _refused(self, status: int, body: bytes) -> BackendError:
        try:
            err = json.loads(body).get("error", {})
            message = err.get("message") if isinstance(err, dict) else str(err)
        except (ValueError, AttributeError):
            message = body.decode("utf-8", "replace")
        return self._fail(
            f"the llama.cpp server answered HTTP {status}",
            str(message or "no reason given"),
            f"see its log {self.server.log_path}",
        )

    # -- generation --------------------------------------------------------------------
    def _body(self, tokens: list[int], sampling: Sampling, seed: int, n: int) -> dict[str, Any]:
        return {
            "prompt": tokens,
            "n_predict": n,
            "stream": True,
            "cache_prompt": False,  # a full prefill every time, like the in-process reset
            "return_tokens": True,
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": sampling.repeat_penalty,
            "repeat_last_n": REPEAT_LAST_N,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "dry_multiplier": 0.0,
            "xtc_probability": 0.0,
            "top_n_sigma": -1.0,
            "mirostat": 0,
            "samplers": SAMPLERS,
            "seed": seed,
        }

    def generate(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int
    ) -> GenerationResult:
        import httpx

        t0 = time.perf_counter()
        prompt_tokens, stop_ids, stops, max_tokens = fit_prompt(
            self.prompt, messages, self.n_ctx, sampling.max_tokens, self.label
        )
        body = self._body(prompt_tokens, sampling, seed, max_tokens)
        done = self.prompt.completion(prompt_tokens, stop_ids, stops)
        ttft: float | None = None
        t_last: float | None = None  # when the last token arrived (since t0)
        final: dict[str, Any] | None = None
        contents: list[str] = []  # only for a server that sends no token ids
        stopped = False
        try:
            with self._client.stream("POST", "/completion", json=body) as resp:
                if resp.status_code != 200:
                    raise self._refused(resp.status_code, resp.read())
                for event in _events(resp.iter_lines()):
                    if "error" in event:
                        err = event["error"]
                        msg = err.get("message") if isinstance(err, dict) else err
                        raise self._fail(
                            "the llama.cpp server reported an error",
                            str(msg),
                            f"see its log {self.server.log_path}",
                        )
                    tokens = event.get("tokens")
                    if tokens is None and event.get("content"):
                        contents.append(str(event["content"]))
                        ttft = ttft if ttft is not None else time.perf_counter() - t0
                    for token in tokens or []:
                        if stopped:
                            break
                        t_last = time.perf_counter() - t0
                        ttft = ttft if ttft is not None else t_last
                        stopped = done.add(int(token)) or len(done.tokens) >= max_tokens
                    if event.get("stop"):
                        final = event
                        break
                    if stopped and done.finish == "stop" and not done.eog:
                        break  # a stop only this side knows: closing the stream ends it
        except BackendError:
            raise
        except ValueError as exc:  # json.JSONDecodeError: not an event of llama.cpp's
            raise self._fail(
                "the llama.cpp server sent an event that is not JSON",
                f"{type(exc).__name__}: {exc}",
                f"check that {self.server.base_url} is the llama.cpp server; see its log "
                f"{self.server.log_path}",
            ) from None
        except httpx.HTTPError as exc:
            raise self._broken(exc, len(done.tokens)) from None
        latency = time.perf_counter() - t0
        if final is None and not stopped:
            srv = self.server
            raise self._fail(
                "the answer stream broke off before the llama.cpp server finished it",
                f"no final event after {len(done.tokens)} tokens; the server "
                + (srv.death_note() if not srv.alive() else "still runs"),
                f"see its log {srv.log_path} and rerun: failed cells are retried",
            )
        return self._result(done, contents, stops, final, prompt_tokens, ttft, t_last, latency)

    def _result(
        self,
        done: Any,
        contents: list[str],
        stops: list[str],
        final: dict[str, Any] | None,
        prompt_tokens: list[int],
        ttft: float | None,
        t_last: float | None,
        latency: float,
    ) -> GenerationResult:
        timings = (final or {}).get("timings") or {}
        stop_type = (final or {}).get("stop_type")
        text = done.text
        completion_tokens = len(done.tokens)
        if contents and not done.tokens:  # a server without token ids: its text, cut here
            text = "".join(contents)
            hit = min((text.find(s) for s in stops if s in text), default=-1)
            text = text[:hit] if hit >= 0 else text
            completion_tokens = int(timings.get("predicted_n") or len(contents))
        finish = "stop" if done.finish == "stop" or stop_type in ("eos", "word") else "length"
        extra: dict[str, Any] = {"server": self.server.kind, "endpoint": self.server.base_url}
        prefill = decode = None
        if timings:
            extra["timings"] = "server"
            extra["n_p_eval"] = timings.get("prompt_n")
            extra["n_eval"] = timings.get("predicted_n")
            extra["t_p_eval_ms"] = timings.get("prompt_ms")
            extra["t_eval_ms"] = timings.get("predicted_ms")
            prefill = _rate(timings.get("prompt_n"), timings.get("prompt_ms"))
            decode = _rate(timings.get("predicted_n"), timings.get("predicted_ms"))
        else:
            extra["timings"] = "client"
            if ttft is not None and t_last is not None and completion_tokens > 1:
                span = t_last - ttft
                decode = (completion_tokens - 1) / span if span > 0 else None
        slot = (final or {}).get("id_slot")
        if isinstance(slot, int) and slot >= 0:
            extra["slot"] = slot
        self.server.rss_mb()
        peak = self.server.peak_rss_mb
        extra["peak_rss_mb"] = peak
        extra["model_mem_mb"] = peak - self.server.rss_baseline_mb if peak else None
        return GenerationResult(
            text=text,
            prompt_tokens=len(prompt_tokens),
            completion_tokens=completion_tokens,
            ttft_s=ttft,
            prefill_tps=prefill,
            decode_tps=decode,
            latency_s=latency,
            finish_reason=finish,
            chat_format=self.chat_format,
            extra=extra,
        )

    def close(self) -> None:
        """Free the HTTP client and the vocabulary; the server keeps running."""
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()
            self._client = None  # type: ignore[assignment]
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None

    def __enter__(self) -> ServerBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def _rate(n: object, ms: object) -> float | None:
    if not isinstance(n, int | float) or not isinstance(ms, int | float):
        return None
    return n / (ms / 1000.0) if n > 0 and ms > 0 else None
