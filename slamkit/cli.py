"""The ``slamkit`` command: a thin layer over the Python API (one subcommand per verb)."""

from __future__ import annotations

import argparse
import sys

from slamkit.errors import SlamkitError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slamkit", description=__doc__)
    p.add_argument("--store", default="data/runs/default/slamkit.duckdb", help="DuckDB store")
    sub = p.add_subparsers(dest="command", required=True)
    # -- subcommands are added below; each sets func=handler(args) -> int --
    _ = sub
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SlamkitError as exc:
        print(f"slamkit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
