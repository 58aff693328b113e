"""The process a :class:`~slamkit.backends.server.ManagedServer` starts: one llama.cpp server.

``python -m slamkit.backends.serve_child --model M --port P ...`` serves ``M`` on
127.0.0.1 with llama.cpp's own HTTP server: in this process through ``xllamacpp``, or,
with ``--binary``, as a ``llama-server`` child that gets SIGKILL the moment this process
dies (``prctl(PR_SET_PDEATHSIG)``). It lives exactly as long as its driver: the driver
holds the other end of this process's stdin, and end of file there, which the kernel
delivers however the driver ends (return, exception, Ctrl-C, SIGKILL), ends the server.
SIGTERM ends it too. Everything goes to stdout/stderr, which the driver sends to a log.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Any

#: the mark :func:`slamkit.backends.server.reap_stale_servers` looks for in a command line
MODULE = "slamkit.backends.serve_child"
PR_SET_PDEATHSIG = 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--threads-batch", type=int, default=1)
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--ctx-per-slot", type=int, default=2048)
    ap.add_argument("--flash-attn", choices=("auto", "on", "off"), default="auto")
    ap.add_argument("--binary", default=None, help="a llama-server executable")
    return ap.parse_args(argv)


def say(text: str) -> None:
    """One line of this wrapper's own in the server's log."""
    print(f"serve_child: {text}", flush=True)


def rss_mb() -> float:
    """This process's resident memory (MiB), from /proc (no import needed)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0.0


def binary_command(args: argparse.Namespace) -> list[str]:
    """llama-server's command line for ``args`` (context ``-c`` is for all slots)."""
    return [
        str(args.binary),
        "-m", args.model,
        "--host", "127.0.0.1",
        "--port", str(args.port),
        "-np", str(args.parallel),
        "-t", str(args.threads),
        "-tb", str(args.threads_batch),
        "-ngl", str(args.n_gpu_layers),
        "-c", str(args.ctx_per_slot * args.parallel),
        "--cont-batching",
        "--flash-attn", args.flash_attn,
    ]  # fmt: skip


def _die_with_parent(parent: int, libc: Any) -> None:
    """In the llama-server child before exec: SIGKILL when this wrapper dies."""
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the wrapper died before prctl took effect
        os._exit(1)


def serve_binary(args: argparse.Namespace) -> int:
    """Run llama-server as this process's child until stdin ends, SIGTERM, or it exits."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()
    cmd = binary_command(args)
    say("starting " + " ".join(cmd))
    try:
        child = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: _die_with_parent(parent, libc),  # safe: no threads yet
        )
    except OSError as exc:
        say(f"error: cannot run {args.binary}: {exc}")
        return 127
    say(f"server pid {child.pid}")
    code: int | None = None
    while code is None and not stop.is_set():
        try:
            ready, _, _ = select.select([sys.stdin], [], [], 0.25)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            ready = []
        if ready and not os.read(sys.stdin.fileno(), 4096):
            say("driver gone (stdin closed): stopping the server")
            break
        code = child.poll()
    if code is not None:
        say(f"llama-server exited with code {code}")
        return code if code > 0 else 1
    child.terminate()
    try:
        child.wait(3)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    return 0


def _exit_at_eof() -> None:
    """Thread: end the whole process (and the server in it) when stdin reaches EOF."""
    while True:
        try:
            data = os.read(sys.stdin.fileno(), 4096)
        except OSError:
            data = b""
        if not data:
            say("driver gone (stdin closed): stopping the server")
            os._exit(0)


def serve_xllamacpp(args: argparse.Namespace) -> int:
    """Run xllamacpp's embedded llama.cpp server in this process until stdin ends."""
    threading.Thread(target=_exit_at_eof, name="stdin-eof", daemon=True).start()
    say(f"rss_before_load_mb={rss_mb():.1f}")
    import xllamacpp

    say(f"xllamacpp {getattr(xllamacpp, '__version__', '?')}")
    p = xllamacpp.CommonParams()
    p.model.path = args.model
    p.n_parallel = args.parallel
    p.n_ctx = args.ctx_per_slot * args.parallel
    p.cont_batching = True
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads_batch
    p.n_gpu_layers = args.n_gpu_layers
    p.port = args.port
    p.hostnames = ["127.0.0.1"]
    p.endpoint_metrics = True
    p.endpoint_slots = True
    p.flash_attn_type = {"auto": -1, "off": 0, "on": 1}[args.flash_attn]
    try:
        server = xllamacpp.Server(p)  # returns once the model is loaded and listening
    except Exception as exc:  # its reason is in the log lines above this one
        say(f"error: the server did not start: {type(exc).__name__}: {exc}")
        sys.stdout.flush()
        os._exit(2)  # not sys.exit: llama.cpp's threads must not keep the process alive
    say(f"listening on {getattr(server, 'listening_address', '?')}")
    while True:  # the server runs in its own threads; SIGTERM or stdin EOF ends us
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.binary:
        return serve_binary(args)
    return serve_xllamacpp(args)


if __name__ == "__main__":
    sys.exit(main())
