"""The command-line arguments of the SMART simulator (``slamkit simulate`` and
``python -m slamkit.smart.simulate``).

Standard library only, so that building the ``slamkit`` parser does not import scipy (or
numpy): :mod:`slamkit.smart.simulate` and :mod:`slamkit.smart.cli` both import from here.

>>> import argparse
>>> ap = argparse.ArgumentParser()
>>> add_simulate_arguments(ap)
>>> args = ap.parse_args(["--seeds", "20", "--settings", "SMS Spam"])
>>> args.seeds, args.settings, args.gamma
(20, ['SMS Spam'], 0.95)
"""

from __future__ import annotations

import argparse

#: the simulator's settings (``SETTINGS`` of :mod:`slamkit.smart.simulate`, then 'Boundary');
#: a test checks that the two agree
SIM_SETTINGS = ["IMDB", "SMS Spam", "AG News", "Boundary"]


def add_simulate_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--seeds", type=int, default=1000, help="replicas per cell (default 1000)")
    ap.add_argument("--gamma", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--settings", nargs="*", default=SIM_SETTINGS, choices=SIM_SETTINGS,
        help="the SMART paper's settings, and 'Boundary': a candidate at 1 - delta - 0.005 "
        "(stress test for peeking)",
    )  # fmt: skip
    ap.add_argument(
        "--out", default="data/simulation_results", help="write OUT.csv and OUT.md ('' to skip)"
    )
