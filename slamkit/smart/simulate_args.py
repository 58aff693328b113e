"""The command-line arguments of the SMART simulator (``slamkit simulate`` and
``python -m slamkit.smart.simulate``), and the checked argparse value types every
``slamkit`` subcommand uses for its numeric flags (:func:`whole`, :func:`number`).

Standard library only (plus :mod:`slamkit.backends.base`, which is too), so that building
the ``slamkit`` parser does not import scipy (or numpy): :mod:`slamkit.smart.simulate` and
:mod:`slamkit.smart.cli` both import from here.

>>> import argparse
>>> ap = argparse.ArgumentParser()
>>> add_simulate_arguments(ap)
>>> args = ap.parse_args(["--seeds", "20", "--settings", "SMS Spam"])
>>> args.seeds, args.settings, args.gamma
(20, ['SMS Spam'], 0.95)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slamkit.backends.base import number_error, number_rule, whole_error, whole_rule

if TYPE_CHECKING:
    from slamkit.engine import Executor

#: the simulator's settings (``SETTINGS`` of :mod:`slamkit.smart.simulate`, then 'Boundary');
#: a test checks that the two agree
SIM_SETTINGS = ["IMDB", "SMS Spam", "AG News", "Boundary"]


def _bad(rule: str, shown: str, note: str) -> argparse.ArgumentTypeError:
    tail = f" ({note})" if note else ""
    return argparse.ArgumentTypeError(f"must be {rule}, got {shown}{tail}")


def whole(minimum: int, note: str = "") -> Callable[[str], int]:
    """An argparse ``type=``: a whole number >= ``minimum``, else argparse's one-line error
    ``argument --limit: must be a whole number >= 1, got -1`` (exit status 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise _bad(whole_rule(minimum), repr(text), note) from None
        if whole_error(value, minimum):
            raise _bad(whole_rule(minimum), text.strip(), note)
        return value

    parse.__name__ = "whole number"
    return parse


def number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    note: str = "",
) -> Callable[[str], float]:
    """An argparse ``type=``: a finite number in the range (``lo_open`` / ``hi_open``: the
    bound itself excluded), else argparse's one-line error naming the flag and the value."""
    rule = number_rule(lo, hi, lo_open, hi_open)

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise _bad(rule, repr(text), note) from None
        if number_error(value, lo, hi, lo_open, hi_open):
            raise _bad(rule, text.strip(), note)
        return value

    parse.__name__ = "number"
    return parse


#: checked types shared by the subcommands
LIMIT = whole(1)
SEED = whole(0)
PROBABILITY = number(0, 1, lo_open=True, hi_open=True)


def add_executor_arguments(ap: argparse.ArgumentParser, server: bool = False) -> None:
    """``--executor``, ``--concurrency``, ``--ray-address`` (and, for GGUF sweeps,
    ``--parallel``, ``--models-at-once``, ``--server-binary``, ``--ray-gpus``): the job
    engine's knobs, the same for every job (see :func:`executor_from_args`)."""
    serves = (
        "each GGUF model behind a managed llama.cpp server with --parallel slots "
        "(continuous batching)" if server else
        "this job has no GGUF model to serve, so it runs as concurrent with --concurrency "
        "(default --parallel)"
    )  # fmt: skip
    ap.add_argument(
        "--executor", choices=["sequential", "concurrent", "server", "ray"],
        default="sequential",
        help="sequential: one request at a time, timings in isolation (default); "
        f"concurrent: --concurrency requests in flight to an endpoint; server: {serves}; "
        "ray: Ray actors on this machine or a cluster (pip install 'slamkit[ray]')",
    )  # fmt: skip
    ap.add_argument(
        "--concurrency", type=whole(1),
        help="requests in flight (concurrent: default 4; server: default --parallel; "
        "ray: actors per model, default 1)",
    )  # fmt: skip
    ap.add_argument(
        "--ray-address", metavar="ADDRESS",
        help="ray: the cluster to join (default: RAY_ADDRESS, else a local cluster)",
    )  # fmt: skip
    ap.add_argument(
        "--parallel", type=whole(1),
        help="server slots per model (server: default 2; ray: each actor serves its "
        "model with a managed server of this many slots)",
    )  # fmt: skip
    if server:
        ap.add_argument(
            "--models-at-once", type=whole(1),
            help="server: models served at the same time, each by its own server (default "
            "1; e.g. 2 servers of --threads 1 on a 2-core machine)",
        )  # fmt: skip
        ap.add_argument(
            "--server-binary", metavar="PATH",
            help="a llama-server executable (e.g. your CUDA build) instead of the "
            "prebuilt xllamacpp server",
        )  # fmt: skip
        ap.add_argument(
            "--ray-gpus", type=number(0), metavar="FRACTION",
            help="ray: GPUs per actor (e.g. 0.25: four actors share one GPU; default 0)",
        )  # fmt: skip


def executor_from_args(args: argparse.Namespace, **options: Any) -> Executor:
    """The executor the flags of :func:`add_executor_arguments` name (``options``: the
    job's own settings, e.g. threads for a sweep's servers and actors)."""
    from slamkit.engine import make_executor

    return make_executor(
        args.executor, args.concurrency, getattr(args, "parallel", None),
        binary=getattr(args, "server_binary", None),
        models_at_once=getattr(args, "models_at_once", None),
        ray_address=args.ray_address, ray_gpus=getattr(args, "ray_gpus", None), **options,
    )  # fmt: skip


def add_simulate_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seeds", type=whole(1), default=1000, help="replicas per cell (default 1000)")
    ap.add_argument("--gamma", type=PROBABILITY, default=0.95, help="confidence, in (0, 1)")
    ap.add_argument("--seed", type=SEED, default=0, help="random seed, >= 0 (default 0)")
    ap.add_argument(
        "--settings", nargs="*", default=SIM_SETTINGS, choices=SIM_SETTINGS,
        help="the SMART paper's settings, and 'Boundary': a candidate at 1 - delta - 0.005 "
        "(stress test for peeking)",
    )  # fmt: skip
    ap.add_argument(
        "--out", default="simulation_results",
        help="write OUT.csv and OUT.md ('' to skip; default: ./simulation_results.* in the "
        "current directory - the committed 1000-seed table is rewritten only with "
        "--out data/simulation_results)",
    )  # fmt: skip
