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
    # catalog / quantize (slamkit.catalog, slamkit.quantize)
    c = sub.add_parser("catalog", help="list GGUF models (defaults, --path, --glob)")
    c.add_argument("--path", action="append", default=[], help="a GGUF file (repeatable)")
    c.add_argument("--glob", action="append", default=[], help="a glob or folder (repeatable)")
    c.add_argument("--no-defaults", action="store_true", help="skip the package-index models")
    c.add_argument("--register", action="store_true", help="write the rows to the store")
    c.set_defaults(func=_cmd_catalog)
    q = sub.add_parser("quantize", help="derive lower-bit variants with llama.cpp's quantizer")
    q.add_argument("src", help="source GGUF file")
    q.add_argument("--types", required=True, help="comma-separated, e.g. Q4_0,Q5_0,Q8_0")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--register", action="store_true", help="record variants in the store")
    q.set_defaults(func=_cmd_quantize)
    _ = sub
    return p


def _cmd_catalog(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from slamkit.catalog import catalog_df, discover, register

    folders = [g for g in args.glob if Path(g).is_dir()]
    globs = [g for g in args.glob if g not in folders]
    infos = discover(args.path, globs, folders, include_defaults=not args.no_defaults)
    cols = ["name", "architecture", "params", "quant", "size", "context_length"]
    cols += ["chat_template", "license", "sha256", "parent"]
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(catalog_df(infos)[cols].to_string(index=False))
    if args.register:
        from slamkit.store import open_store

        with open_store(args.store) as st:
            print(f"{register(st, infos)} new model rows in {args.store}")
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    import contextlib

    from slamkit.catalog import catalog_df
    from slamkit.quantize import variant_ladder

    types = args.types.split(",")
    with contextlib.ExitStack() as stack:
        st = None
        if args.register:
            from slamkit.store import open_store

            st = stack.enter_context(open_store(args.store))
        infos = variant_ladder(args.src, types, args.out, st)
    cols = ["name", "quant", "size", "tensor_types", "sha256", "parent"]
    print(catalog_df(infos)[cols].to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SlamkitError as exc:
        print(f"slamkit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
