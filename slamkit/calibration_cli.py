"""``slamkit human``: import pairwise human preferences, calibrate a judge on them.

* ``slamkit human import FILE --task T [--map ROLE=FIELD ...] [--criterion NAME=FIELD ...]
  [--label VALUE=left|right|tie ...]`` (:func:`slamkit.preferences.import_preferences`)
* ``slamkit human calibrate --base-url URL --model M`` runs the judge on the human pairs and
  prints the calibration tables (:func:`slamkit.calibration.calibrate_judge`)
* ``slamkit human report`` prints them from what is stored (no judge calls)
"""

from __future__ import annotations

import argparse

from slamkit.errors import SlamkitError
from slamkit.smart.simulate_args import (
    LIMIT,
    add_executor_arguments,
    executor_from_args,
    number,
    whole,
)


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key.strip():
            raise SlamkitError(f"{flag} {v!r}: write NAME=VALUE (e.g. {flag} choice=winner).")
        out[key.strip()] = val.strip()
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    h = sub.add_parser("human", help="human preferences: import a file, calibrate a judge")
    hs = h.add_subparsers(dest="human_command", required=True)
    i = hs.add_parser("import", help="import pairwise human preferences (JSON, JSONL, CSV, "
                      "Parquet)")  # fmt: skip
    i.add_argument("path", help="the preference file")
    i.add_argument("--task", required=True, help="task id the pairs belong to (made if missing)")
    i.add_argument(
        "--map", action="append", metavar="ROLE=FIELD",
        help="which field holds a role (repeat): text_a, text_b, choice, model_a, model_b, "
        "annotator, time_spent, item_id, prompt, reason; dotted paths reach nested values "
        "(default: the field named like the role)",
    )  # fmt: skip
    i.add_argument("--criterion", action="append", metavar="NAME=FIELD",
                   help="a per-criterion choice field (repeat)")  # fmt: skip
    i.add_argument(
        "--label", action="append", metavar="VALUE=SIDE",
        help="map a raw choice value to left (A, 1), right (B, 2) or tie (repeat); "
        "defaults know 1/2/A/B/tie/'About the same'/'1 is better'/model names",
    )  # fmt: skip
    i.add_argument("--annotator", help="annotator name for a file that names none")
    i.add_argument("--format", choices=["json", "jsonl", "csv", "parquet"],
                   help="default: from the suffix")  # fmt: skip
    i.add_argument("--records-key", help="JSON: the key holding the records (a dotted path "
                   "reaches nested keys: export.annotators)")  # fmt: skip
    i.add_argument("--nested", help="each record holds a list of records under this field "
                   "(its other fields, e.g. the annotator, are inherited)")  # fmt: skip
    g = i.add_mutually_exclusive_group()
    g.add_argument("--grouped", action="store_true", default=None,
                   help="JSON object of annotator -> records, or -> an object "
                   "holding them under --nested (default: detected)")  # fmt: skip
    g.add_argument("--not-grouped", dest="grouped", action="store_false")
    i.set_defaults(func=_import)

    for name, helptext in (
        ("calibrate", "run a judge on the human pairs and report judge-human agreement"),
        ("report", "judge-human agreement from stored verdicts (no judge calls)"),
    ):
        c = hs.add_parser(name, help=helptext)
        if name == "calibrate":
            c.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
            c.add_argument("--model", required=True, help="judge model name sent to the endpoint")
            c.add_argument("--api-key-env", default="OPENAI_API_KEY",
                           help="environment variable holding the key (never stored)")  # fmt: skip
            c.add_argument("--max-tokens", type=whole(1), default=256, help=">= 1 (default 256)")
            c.add_argument("--timeout", type=number(0, lo_open=True, note="seconds"),
                           default=60.0, help="seconds per request (default 60)")  # fmt: skip
            c.add_argument("--limit", type=LIMIT, help="the first N human pairs (default: all)")
            c.add_argument("--criteria", default="",
                           help="comma-separated criteria to judge too, as the imported "
                           "per-criterion choices are named (default: overall only)")  # fmt: skip
            add_executor_arguments(c)
            c.add_argument("--quiet", action="store_true")
        else:
            c.add_argument("--judge", help="only this judge model (default: every judge)")
        c.add_argument("--task", help="only this task id")
        c.add_argument("--source", help="only human labels whose source contains this "
                       "(e.g. the file name)")  # fmt: skip
        c.add_argument(
            "--n-labeled", type=whole(2),
            help="PPI: keep only N human labels per model pair (random, seeded)",
        )  # fmt: skip
        c.add_argument("--seed", type=whole(0), default=0)
        c.set_defaults(func=_calibrate if name == "calibrate" else _report)


def _import(args: argparse.Namespace) -> int:
    from slamkit.preferences import import_preferences
    from slamkit.store import open_store

    columns = _pairs(args.map, "--map")
    criteria = _pairs(args.criterion, "--criterion")
    labels = _pairs(args.label, "--label")
    with open_store(args.store) as st:
        res = import_preferences(
            st, args.path, args.task, columns=columns, criteria=criteria, labels=labels,
            annotator=args.annotator, format=args.format, records_key=args.records_key,
            nested=args.nested, grouped=args.grouped,
        )  # fmt: skip
    print(f"{res} ({args.store})")
    return 0


def _print(cal: object) -> None:
    import pandas as pd

    from slamkit.calibration import Calibration

    assert isinstance(cal, Calibration)
    with pd.option_context("display.width", 200, "display.max_columns", 30,
                           "display.float_format", "{:.3f}".format):  # fmt: skip
        if cal.judged:
            print("judge calls: " + ", ".join(f"{k}={v}" for k, v in cal.judged.items()))
        if cal.note:
            print(f"note: {cal.note}")
        for title, df in (
            ("judge-human agreement (raw agreement and Cohen's kappa, 95% bootstrap CIs)",
             cal.agreement),
            ("inter-annotator agreement", cal.annotators),
            ("Bradley-Terry strengths, humans vs judge (95% bootstrap CIs)", cal.ratings),
            ("win rates of model_a over model_b (ties half): human, judge, PPI (95% CIs)",
             cal.win_rates),
        ):  # fmt: skip
            if not df.empty:
                print(f"\n{title}:")
                print(df.to_string(index=False))
        if cal.spearman:
            rho = ", ".join(f"{j}: {r:.3f}" for j, r in cal.spearman.items())
            print(f"\nSpearman rank correlation of the strengths (judge vs humans): {rho}")


def _calibrate(args: argparse.Namespace) -> int:
    from slamkit.calibration import calibrate_judge
    from slamkit.judge import JudgeConfig
    from slamkit.store import open_store

    cfg = JudgeConfig(base_url=args.base_url, model=args.model, api_key_env=args.api_key_env,
                      max_tokens=args.max_tokens, timeout_s=args.timeout)  # fmt: skip
    with open_store(args.store) as st:
        cal = calibrate_judge(
            st, cfg, task_id=args.task, source=args.source, limit=args.limit,
            criteria=[c.strip() for c in args.criteria.split(",") if c.strip()],
            progress=not args.quiet, executor=executor_from_args(args),
            n_labeled=args.n_labeled, seed=args.seed,
        )  # fmt: skip
    _print(cal)
    return 1 if cal.judged.get("failed") else 0


def _report(args: argparse.Namespace) -> int:
    from slamkit.calibration import calibration_report
    from slamkit.store import open_store

    with open_store(args.store) as st:
        cal = calibration_report(
            st, judge_model=args.judge, task_id=args.task, source=args.source,
            n_labeled=args.n_labeled, seed=args.seed,
        )  # fmt: skip
    _print(cal)
    return 0
