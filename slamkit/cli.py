"""The ``slamkit`` command: a thin layer over the Python API (one subcommand per verb)."""

from __future__ import annotations

import argparse
import sys

from slamkit.backends.llamacpp import CHAT_FORMATS
from slamkit.errors import SlamkitError
from slamkit.smart.simulate_args import (
    LIMIT,
    SEED,
    add_executor_arguments,
    executor_from_args,
    number,
    whole,
)

#: checked value types of the generation flags (argparse prints a one-line error, exit 2)
MAX_TOKENS = whole(1)
TEMPERATURE = number(0, 2)
TOP_P = number(0, 1, lo_open=True)
THREADS = whole(1)
TIMEOUT = number(0, lo_open=True, note="seconds")


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
    # refs: import / alpaca-eval / capture (slamkit.references)
    r = sub.add_parser("refs", help="reference outputs: import a file, AlpacaEval, capture")
    rs = r.add_subparsers(dest="refs_command", required=True)
    ri = rs.add_parser("import", help="import references from JSON, JSONL, CSV or Parquet")
    ri.add_argument("file")
    ri.add_argument("--task", required=True, help="task id to import into")
    ri.add_argument("--text-col", required=True, help="column with the reference text")
    ri.add_argument("--id-col", help="column with item ids (default: hash of the fields)")
    ri.add_argument("--model", help="reference model name (constant for every row)")
    ri.add_argument("--model-col", help="column with the reference model name")
    ri.add_argument("--template", default="{instruction}", help="prompt template")
    ri.add_argument(
        "--field",
        action="append",
        default=[],
        metavar="NAME[=COLUMN]",
        help="item field (repeatable); default: the fields the template names",
    )
    ri.add_argument(
        "--col",
        action="append",
        default=[],
        metavar="ROLE=COLUMN",
        help="prompt_tokens, completion_tokens, latency_s, ttft_s, sample_index",
    )
    ri.add_argument("--format", help="json, jsonl, csv or parquet (default: by suffix)")
    ri.add_argument("--records-key", help="JSON object key holding the rows")
    ri.add_argument("--system-prompt")
    ri.add_argument("--limit", type=LIMIT, help="first N rows of the file (default: all)")
    ri.set_defaults(func=_cmd_refs_import)
    ra = rs.add_parser("alpaca-eval", help="load AlpacaEval's GPT-4 Turbo references (805)")
    ra.add_argument("--limit", type=LIMIT, help="first N items (after --subset)")
    ra.add_argument("--subset", help="selfinstruct, oasst, koala, helpful_base or vicuna")
    ra.set_defaults(func=_cmd_refs_alpaca)
    rc = rs.add_parser("capture", help="capture references from an OpenAI-compatible endpoint")
    rc.add_argument("--task", default="alpaca_eval")
    rc.add_argument("--base-url", help="endpoint, e.g. http://127.0.0.1:8080/v1 (default OpenAI)")
    rc.add_argument("--model", required=True, help="model name sent to the endpoint")
    rc.add_argument("--source-model", help="name stored with the references (default --model)")
    rc.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the key")
    rc.add_argument("--limit", type=LIMIT, help="first N items of the task (default: all)")
    rc.add_argument("--max-tokens", type=MAX_TOKENS, default=512, help=">= 1 (default 512)")
    rc.add_argument("--temperature", type=TEMPERATURE, default=0.0, help="0 to 2 (default 0)")
    rc.add_argument("--seed", type=SEED, default=0, help=">= 0 (default 0)")
    rc.add_argument("--timeout", type=TIMEOUT, default=60.0, help="seconds per request (60)")
    add_executor_arguments(rc)
    rc.set_defaults(func=_cmd_refs_capture)
    g = sub.add_parser("run", help="generate: models x items x sampling x samples (resumable)")
    g.add_argument("--task", default="alpaca_eval", help="task id in the store")
    g.add_argument("--model", action="append", default=[], help="GGUF path (repeatable)")
    g.add_argument(
        "--glob", action="append", default=[], metavar="GLOB_OR_FOLDER",
        help="every .gguf file a glob matches or a folder holds (repeatable, as in catalog)",
    )  # fmt: skip
    g.add_argument("--defaults", action="store_true", help="add the package-index models")
    g.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model behind an OpenAI-compatible endpoint (repeatable; needs --base-url)",
    )
    g.add_argument("--base-url", help="endpoint of --endpoint models (default: OpenAI)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the key")
    g.add_argument(
        "--timeout", type=TIMEOUT, default=60.0,
        help="seconds per request to an --endpoint model (default 60; the openai client tries "
        "a request up to 3 times, so a hanging endpoint costs about 3x this per cell); a "
        "timed-out cell is stored with its error and retried on the next run",
    )  # fmt: skip
    g.add_argument("--limit", type=LIMIT, help="first N items of the task (default: all)")
    g.add_argument("--samples", type=whole(1), default=1, help="samples per item (default 1)")
    g.add_argument("--seed", type=SEED, default=0, help="seed of sample 0, >= 0 (default 0)")
    g.add_argument(
        "--temperature", type=TEMPERATURE, action="append",
        help="0 to 2 (default 0); repeatable: a sweep",
    )  # fmt: skip
    g.add_argument("--top-p", type=TOP_P, default=1.0, help="in (0, 1] (default 1)")
    g.add_argument("--max-tokens", type=MAX_TOKENS, default=128, help=">= 1 (default 128)")
    g.add_argument("--threads", type=THREADS, help="n_threads >= 1 (default: half the cores)")
    g.add_argument("--threads-batch", type=THREADS, help="n_threads_batch (default: --threads)")
    g.add_argument(
        "--gpu-layers", type=whole(-1, "-1 = all layers"), default=0,
        help="n_gpu_layers: 0 = CPU only (default), -1 = all",
    )  # fmt: skip
    g.add_argument("--n-ctx", type=whole(1), default=2048, help="context size (default 2048)")
    g.add_argument(
        "--chat-format", default="auto", choices=CHAT_FORMATS,
        help="chat format of every --model GGUF: auto (its own template, else a fallback) or "
        "one of slamkit's (chatml, gemma-turns, plain), e.g. when the GGUF's template is "
        "blocked for safety",
    )  # fmt: skip
    add_executor_arguments(g, server=True)
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("--print-rows", action="store_true", help="print each stored key")
    g.set_defaults(func=_cmd_run)
    b = sub.add_parser("batch", help="run the notebook series with papermill; render report.html")
    b.add_argument("--params", required=True, help="YAML/JSON file of notebook parameters")
    b.add_argument(
        "--out",
        help="folder for executed notebooks + report.html (default: report/ next to the store)",
    )
    b.add_argument("--notebooks", help="folder of NN_name.ipynb notebooks (default: notebooks/)")
    b.add_argument("--only", nargs="*", help="run only these notebooks (prefixes, e.g. 07 09)")
    b.add_argument("--no-html", action="store_true", help="skip the HTML report")
    b.set_defaults(func=_cmd_batch)
    # quality: score / judge / import-slam (slamkit.metrics, slamkit.judge, slamkit.slam_import)
    from slamkit import slam_import
    from slamkit.judge import cli as judge_cli
    from slamkit.metrics import cli as score_cli

    score_cli.add_parser(sub)
    judge_cli.add_parser(sub)
    slam_import.add_parser(sub)
    # analysis: simulate / smart (slamkit.smart)
    from slamkit import load_cli
    from slamkit.smart import cli as smart_cli

    smart_cli.add_parser(sub)
    load_cli.add_parser(sub)
    from slamkit import calibration_cli  # human preferences: import, judge calibration

    calibration_cli.add_parser(sub)
    from slamkit.matrix import cli as matrix_cli

    matrix_cli.add_parser(sub)
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
    df = catalog_df(infos)
    with pd.option_context("display.width", 200, "display.max_columns", None):
        print(df[cols].to_string(index=False))
    for name, note in zip(df["name"], df["quant_note"], strict=True):
        if note:
            print(f"note: {name}: {note}")
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
    df = catalog_df(infos)
    cols = ["name", "quant", "size", "tensor_types", "sha256", "parent"]
    print(df[cols].to_string(index=False))
    for name, note in zip(df["name"], df["quant_note"], strict=True):
        if note:
            print(f"note: {name}: {note}")
    return 0


def _cmd_refs_import(args: argparse.Namespace) -> int:
    from slamkit.references import import_references
    from slamkit.store import open_store

    columns = {"text": args.text_col}
    if args.id_col:
        columns["item_id"] = args.id_col
    if args.model_col:
        columns["source_model"] = args.model_col
    for c in args.col:
        role, sep, col = c.partition("=")
        if not sep or not role.strip() or not col.strip():
            raise SlamkitError(
                f"--col {c!r}: write ROLE=COLUMN, e.g. --col prompt_tokens=input_tokens "
                "(roles: prompt_tokens, completion_tokens, latency_s, ttft_s, sample_index)."
            )
        columns[role.strip()] = col.strip()
    fields = dict(f.split("=", 1) if "=" in f else (f, f) for f in args.field) or None
    with open_store(args.store) as st:
        res = import_references(
            st, args.file, args.task, columns=columns, source_model=args.model,
            template=args.template, fields=fields, format=args.format,
            records_key=args.records_key, system_prompt=args.system_prompt, limit=args.limit,
        )  # fmt: skip
    print(f"{res.rows} rows read: {res.items_added} new items, {res.refs_added} new references "
          f"in task {res.task_id!r} ({args.store})")  # fmt: skip
    return 0


def _cmd_refs_alpaca(args: argparse.Namespace) -> int:
    from slamkit.references import load_alpaca_eval
    from slamkit.store import open_store

    with open_store(args.store) as st:
        res = load_alpaca_eval(st, limit=args.limit, subset=args.subset)
    print(f"AlpacaEval (CC BY-NC 4.0): {res.rows} rows, {res.items_added} new items, "
          f"{res.refs_added} new references in task 'alpaca_eval' ({args.store})")  # fmt: skip
    return 0


def _cmd_refs_capture(args: argparse.Namespace) -> int:
    from slamkit.backends import Sampling
    from slamkit.backends.openai_compat import OpenAIBackend
    from slamkit.references import capture_references
    from slamkit.store import open_store

    sampling = Sampling(temperature=args.temperature, max_tokens=args.max_tokens)
    backend = OpenAIBackend(args.model, args.base_url, args.api_key_env, args.timeout)
    try:
        with open_store(args.store) as st:
            res = capture_references(
                st, backend, args.task, args.source_model or args.model, sampling, args.seed,
                limit=args.limit, executor=executor_from_args(args),
            )  # fmt: skip
    finally:
        backend.close()
    print(f"{res}\nfrom {backend.base_url} into task {args.task!r}")
    return 1 if res.failed else 0


def _run_models(args: argparse.Namespace) -> list:
    """The models of ``slamkit run``: --model files, --glob globs and folders, --endpoint
    models, and the package-index defaults (with --defaults, or when nothing else is named).
    A folder passed to --model, or a --glob matching no .gguf file, is an error."""
    import warnings
    from pathlib import Path

    from slamkit.catalog import default_model_paths, discover
    from slamkit.runner import EndpointModel, ModelLike

    for m in args.model:
        if Path(m).is_dir():
            raise SlamkitError(
                f"--model {m}: is a folder, not a GGUF file. Pass it as --glob {m} to run "
                "every .gguf file in it."
            )
    models: list[ModelLike] = list(args.model)
    for g in args.glob:
        folder = Path(g).is_dir()
        with warnings.catch_warnings():  # "matched no files" becomes the error below
            warnings.simplefilter("ignore", UserWarning)
            found = discover(globs=[] if folder else [g], folders=[g] if folder else [],
                             include_defaults=False)  # fmt: skip
        if not found:
            raise SlamkitError(
                f"--glob {g}: " + ("the folder holds no .gguf file." if folder else
                                   "matches no .gguf file.") + " Check the path (quote the "
                "glob so the shell does not expand it, e.g. --glob 'models/*.gguf')."
            )  # fmt: skip
        models += found
    if args.defaults or not (models or args.endpoint):
        models = [str(p) for p in default_model_paths().values()] + models
    models += [
        EndpointModel(m, args.base_url, args.api_key_env, timeout=args.timeout)
        for m in args.endpoint
    ]
    return models


def _cmd_run(args: argparse.Namespace) -> int:
    from slamkit.backends import Sampling
    from slamkit.runner import run_sweep
    from slamkit.store import open_store

    models = _run_models(args)
    samplings = [
        Sampling(temperature=t, top_p=args.top_p, max_tokens=args.max_tokens)
        for t in (args.temperature or [0.0])
    ]

    def show(row: dict) -> None:
        print(f"stored {row['gen_key']}", flush=True)

    with open_store(args.store) as st:
        res = run_sweep(
            st, models, args.task, samplings, n_samples=args.samples, seed=args.seed,
            limit=args.limit, n_threads=args.threads, n_threads_batch=args.threads_batch,
            n_gpu_layers=args.gpu_layers, n_ctx=args.n_ctx, progress=not args.quiet,
            on_row=show if args.print_rows else None, chat_format=args.chat_format,
            executor=executor_from_args(
                args, n_threads=args.threads, n_threads_batch=args.threads_batch,
                n_gpu_layers=args.gpu_layers, n_ctx=args.n_ctx,
            ),
        )  # fmt: skip
    summary = str(res)
    print(summary)
    # the first distinct errors, one line each (unless the summary already shows them)
    errors = [" ".join(str(e).split()) for e in getattr(res, "errors", None) or []]
    missing = [e for e in errors[:3] if e not in summary]
    if missing:
        print("first errors (each failed cell is stored with its error and retried on the "
              "next run):", file=sys.stderr)  # fmt: skip
        for err in missing:
            print(f"  {err}", file=sys.stderr)
    if res.failed and not (res.generated or res.cached):
        print(f"every cell failed ({res.failed} of {res.planned}): nothing was generated; "
              "fix the cause above and run again.", file=sys.stderr)  # fmt: skip
    return 1 if res.failed else 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from slamkit.batch import load_params, run_batch

    res = run_batch(load_params(args.params), args.out, notebooks_dir=args.notebooks,
                    only=args.only, html=not args.no_html,
                    defaults={"store_path": args.store})  # fmt: skip
    print(f"{len(res.notebooks)} notebooks executed in {sum(res.seconds.values()):.0f} s "
          f"-> {res.out_dir}")  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SlamkitError as exc:
        print(f"slamkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "slamkit: interrupted — every row committed before the interrupt is kept; run "
            "the same command again to resume (stored cells are skipped).",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
