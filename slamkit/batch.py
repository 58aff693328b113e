"""Run the notebook series with papermill and render a self-contained HTML report.

``run_batch(params, out_dir)`` executes ``notebooks/NN_*.ipynb`` in order, each with the
parameters its ``parameters`` cell declares (taken from one YAML/JSON file), keeps every
executed notebook in ``out_dir``, then renders ``report.html`` from the last notebook
(``09_report``) with nbconvert. The HTML opens offline: plotly.js is embedded once,
inline, and no ``<script src=...>`` points anywhere. Secrets found in the environment
(``*_API_KEY``, ``*_KEY``, ``*TOKEN*``, ...) and the variables ``*api_key_env`` parameters
name are redacted from every file written, also when a notebook fails or its kernel dies.

The parameters are checked once, before the first notebook runs (:func:`validate_params`):
each known name against its rule (types, ranges, choices, rows of ``data/prices.csv``),
any other name a notebook declares against the type of that notebook's default, and the
combinations (``judge_base_url`` with ``judge_model``, ...). A parameter that holds a secret
(named like a key, shaped like one, or equal to a secret-looking environment variable) is
refused. Every problem is named in one message; nothing runs and nothing is written.
"""

from __future__ import annotations

import ast
import difflib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slamkit.backends.base import MAX_TOKENS_LIMIT
from slamkit.errors import SlamkitError, require
from slamkit.secrets import environment_secrets, looks_like_key, redact

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
REPORT_NOTEBOOK = "09_report"
#: parameter names that say "this is a credential" (``openai_api_key``, ``hf_token``,
#: ``db_password``) ...
_SECRET_PARAM = re.compile(
    r"(^|_)(api_?key|access_?key|private_?key|secret|secret_?key|password|passwd"
    r"|credentials?|token|auth_?token|bearer)(_|$)",
    re.I,
)
#: ... unless they point at one instead of holding it (``api_key_env``, ``token_file``)
_POINTER_PARAM = re.compile(r"(^|_)(env|var|file|path|dir|url|uri)$", re.I)
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class BatchError(SlamkitError):
    """The batch could not start (bad parameters) or a notebook failed."""


class NotebookFailedError(BatchError):
    """A notebook of the series raised; the message names the notebook and the cell."""


@dataclass
class BatchResult:
    out_dir: Path
    notebooks: list[Path] = field(default_factory=list)
    report: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


# -- parameters ----------------------------------------------------------------------
class ParamsFile(dict[str, Any]):
    """The parameters read from a file; ``source`` (the path as given) names it in errors."""

    source: str = "parameters"


def load_params(path: str | Path) -> ParamsFile:
    """Read a YAML or JSON parameters file into a flat dict of notebook parameters."""
    p = Path(path)
    if not p.exists():
        raise BatchError(f"Parameters file {p} does not exist; see data/default_params.yaml.")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise BatchError(f"Parameters file {p} is not valid YAML/JSON: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BatchError(f"Parameters file {p} must hold a mapping of name: value at top level.")
    bad_names = sorted(repr(k) for k in data if not isinstance(k, str) or not k.isidentifier())
    if bad_names:
        raise BatchError(
            f"Parameters file {p}: {', '.join(bad_names)} cannot be a parameter name; names are "
            "Python identifiers such as n_items (see data/default_params.yaml)."
        )
    out = ParamsFile(data)
    out.source = str(path)
    return out


def series(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in workflow order."""
    d = Path(notebooks_dir or NOTEBOOKS_DIR)
    found = sorted(p for p in d.glob("[0-9][0-9]_*.ipynb") if p.is_file())
    if not found:
        raise BatchError(f"No numbered notebooks (NN_name.ipynb) found in {d}.")
    return found


def declared_parameters(notebook: Path) -> dict[str, str]:
    """Names -> default source text of the cell tagged ``parameters`` in ``notebook``."""
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cell = next(
        (c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None
    )
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise BatchError(f"{notebook}: the parameters cell is not valid Python: {exc}") from None
    out: dict[str, str] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, ast.AnnAssign) and node.value else []
        )  # fmt: skip
        for t in targets:
            if isinstance(t, ast.Name):
                out[t.id] = ast.get_source_segment(cell.source, node.value) or ""  # type: ignore[arg-type]
    return out


# -- the parameters model --------------------------------------------------------------
class _Refused(ValueError):
    """A value a rule does not take; ``detail`` says which part (a list entry, a row)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass(frozen=True)
class Rule:
    """What one batch parameter takes.

    ``allowed`` says it in words for the error message; ``convert`` returns the value as
    the notebooks get it (``temperature: 0`` becomes ``0.0``, ``max_tokens: 128.0`` becomes
    ``128``) or raises :class:`ValueError` / :class:`_Refused`.
    """

    allowed: str
    convert: Callable[[Any], Any]


def _number_of(v: Any) -> float | int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(v)
    return v


def _whole(lo: int, example: int, null: str = "", hi: int | None = None) -> Rule:
    """A whole number >= ``lo`` (and <= ``hi``); ``null``: what None means (None refused
    when empty)."""

    def convert(v: Any) -> int | None:
        if v is None and null:
            return None
        n = _number_of(v)
        if n != int(n) or n < lo or (hi is not None and n > hi):
            raise ValueError(v)
        return int(n)

    tail = f", or null for {null}" if null else ""
    most = f" and <= {hi:,}" if hi is not None else ""
    return Rule(f"a whole number >= {lo}{most} (e.g. {example}){tail}", convert)


def _real(
    lo: float | None, hi: float | None, example: str, *, open_lo: bool = False,
    open_hi: bool = False, null: str = "",
) -> Rule:  # fmt: skip
    """A finite number in the interval; ints become floats (0 -> 0.0, as the notebooks'
    defaults: the sampling settings are part of each generation's content key)."""

    def convert(v: Any) -> float | None:
        if v is None and null:
            return None
        x = float(_number_of(v))
        if lo is not None and (x <= lo if open_lo else x < lo):
            raise ValueError(v)
        if hi is not None and (x >= hi if open_hi else x > hi):
            raise ValueError(v)
        return x

    if lo is not None and hi is not None:
        if open_lo and open_hi:
            span = f"a number strictly between {lo:g} and {hi:g}"
        elif open_lo:
            span = f"a number above {lo:g} and at most {hi:g}"
        else:
            span = f"a number from {lo:g} to {hi:g}"
    elif lo is not None:
        span = f"a number {'>' if open_lo else '>='} {lo:g}"
    else:
        span = "a number"
    tail = f", or null for {null}" if null else ""
    return Rule(f"{span} (e.g. {example}){tail}", convert)


def _text(example: str, null: str = "", choices: Sequence[str] = ()) -> Rule:
    """Non-empty text (one of ``choices`` when given); None allowed when ``null`` says why."""

    def convert(v: Any) -> str | None:
        if v is None and null:
            return None
        if not isinstance(v, str) or not v.strip() or (choices and v not in choices):
            raise ValueError(v)
        return v

    if choices:
        what = "one of " + ", ".join(repr(c) for c in choices)
    else:
        what = f"non-empty text (e.g. {example})"
    return Rule(what + (f", or null for {null}" if null else ""), convert)


def _flag(example: str) -> Rule:
    def convert(v: Any) -> bool:
        if not isinstance(v, bool):
            raise ValueError(v)
        return v

    return Rule(f"true or false (e.g. {example})", convert)


def _url(null: str) -> Rule:
    def convert(v: Any) -> str | None:
        if v is None:
            return None
        if not isinstance(v, str) or not re.match(r"https?://[^\s/]+", v):
            raise ValueError(v)
        return v

    return Rule(
        f"an http:// or https:// URL (e.g. http://127.0.0.1:8080/v1), or null for {null}",
        convert,
    )


def _names(
    example: str, valid: Callable[[str], str | None] | None = None, what: str = "names"
) -> Rule:
    """A list of non-empty strings; ``valid(entry)`` returns why an entry is refused."""

    def convert(v: Any) -> list[str]:
        if not isinstance(v, list | tuple):
            raise ValueError(v)
        for entry in v:
            if not isinstance(entry, str) or not entry.strip():
                raise _Refused(f"{entry!r} is not a name")
            why = valid(entry) if valid else None
            if why:
                raise _Refused(why)
        return list(v)

    return Rule(f"a list of {what} (e.g. {example}; [] for none)", convert)


def _each(rule: Rule, example: str) -> Rule:
    """A list whose every entry follows ``rule`` ([] allowed)."""

    def convert(v: Any) -> list[Any]:
        if not isinstance(v, list | tuple):
            raise ValueError(v)
        return [rule.convert(x) for x in v]

    return Rule(f"a list of {rule.allowed.split(' (e.g.')[0]}s (e.g. {example}; [] for none)",
                convert)  # fmt: skip


def _location(kind: str, example: str) -> Rule:
    """A path as text; the store may not be a folder, a models folder may not be a file."""

    def convert(v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(v)
        p = Path(v).expanduser()
        if kind == "store":
            if v == ":memory:":
                raise _Refused("an in-memory store would be gone before the next notebook")
            if p.is_dir():
                raise _Refused(f"{v} is a folder; name the DuckDB file inside it")
        elif p.exists() and not p.is_dir():
            raise _Refused(f"{v} is a file, not a folder")
        return v

    what = "the path of a DuckDB file" if kind == "store" else "the path of a folder"
    return Rule(f"{what}, as text (e.g. {example})", convert)


def _metric_name(spec: str) -> str | None:
    """Why ``spec`` is not a metric spec (``rougeL``, ``max_sentences:4``), or None."""
    from slamkit import metrics

    parse = getattr(metrics, "parse_metric_spec", None)
    if parse is not None:  # the metrics' own parser: names and arguments, builds nothing
        try:
            parse(spec)
        except SlamkitError as exc:
            return str(exc).rstrip(".")
        return None
    name = spec.partition(":")[0]
    if name in metrics.REGISTRY:
        return None
    close = difflib.get_close_matches(name, list(metrics.REGISTRY), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{name!r} is not a metric{hint}; known: {', '.join(sorted(metrics.REGISTRY))}"


def _quant_type(name: str) -> str | None:
    from slamkit.quantize import valid_ftypes

    valid = valid_ftypes()
    if name.strip().upper().removeprefix("MOSTLY_") in valid:
        return None
    return f"{name!r} is not a quantization type llama.cpp can write; valid: {', '.join(valid)}"


#: Every parameter the notebooks declare, with what it takes. A name a notebook declares
#: but this table lacks is checked against the type of that notebook's default.
PARAMETERS: dict[str, Rule] = {
    # store and task
    "store_path": _location("store", "data/runs/default/slamkit.duckdb"),
    "task_id": _text("alpaca_eval"),
    "reference_model": _text("gpt4_1106_preview"),
    "n_items": _whole(1, 10, null="every item"),
    # models
    "include_defaults": _flag("true"),
    "model_paths": _names("[~/models/*.gguf]", what="GGUF paths or globs"),
    "quant_types": _names("[Q4_0, Q8_0]", _quant_type, "quantization types"),
    "quantize_model": _text("SmolLM2-135M-Instruct.Q4_1", null="no derived variants"),
    "models_dir": _location("folder", "data/runs/default/models"),
    "models": _names("[SmolLM2-135M-Instruct.Q4_1]", what="model names"),
    # references
    "capture_base_url": _url("no capture"),
    "capture_model": _text("gpt-4", null="no capture"),
    # generation
    "n_samples": _whole(1, 1),
    "seed": _whole(0, 0),
    "temperature": _real(0, 2, "0.0 for greedy decoding, 0.7 for varied samples"),
    "max_tokens": _whole(1, 128, hi=MAX_TOKENS_LIMIT),
    "n_threads": _whole(1, 1),
    "backend": _text("llamacpp", choices=("llamacpp", "mock")),
    "executor": _text("sequential", choices=("sequential", "server", "ray")),
    "parallel": _whole(1, 2, null="2 slots"),
    "concurrency": _whole(1, 2, null="the executor's default"),
    "timings": _text("isolated", choices=("isolated", "all")),
    # quality
    "metrics": _names("[rougeL, chrf, max_sentences:4]", _metric_name, "metrics"),
    "quality_metric": _text("rougeL"),
    "judge_base_url": _url("no judge"),
    "judge_model": _text("gpt-4", null="no judge"),
    "judge_max_tokens": _whole(1, 256),
    # the variant matrix
    "drift_n_ctx": _whole(8, 128),
    "drift_chunks": _whole(1, 4),
    "speed_pp": _whole(1, 64),
    "speed_tg": _whole(1, 32),
    "speed_reps": _whole(1, 3),
    "repro_cells": _whole(1, 3),
    "repro_k": _whole(1, 1),
    # cost
    "instance": _text("aws-c7i.large"),
    "hourly_usd": _real(0, None, "0.089", open_lo=True, null="the price of `instance`"),
    "utilization": _real(0, 1, "0.5 for half busy", open_lo=True),
    "requests_per_month": _real(0, None, "100000", open_lo=True),
    "api_price": _text("gpt-4"),
    # serving load test (05_performance)
    "load_model": _text("SmolLM2-135M-Instruct.Q4_1", null="the first default model"),
    "load_concurrency": _each(_whole(1, 2), "[1, 2, 4]"),
    "load_rates": _each(_real(0, None, "0.5", open_lo=True), "[0.5, 1.0]"),
    "load_requests": _whole(1, 6, null="max(8, 3 x level)"),
    "load_max_s": _real(0, None, "120", open_lo=True),
    "load_target_ttft_s": _real(0, None, "1.0", open_lo=True, null="the reference API's p95"),
    "load_target_e2e_s": _real(0, None, "10.0", open_lo=True, null="the reference API's p95"),
    # selection
    "delta": _real(0, 1, "0.1: at most 10% of outputs may differ", open_lo=True, open_hi=True),
    "gamma": _real(0, 1, "0.95 for 95% confidence", open_lo=True, open_hi=True),
    "conformity_metric": _text("rougeL"),
    "conformity_tau": _real(None, None, "0.3"),
    "smart_method": _text("anytime", choices=("smart", "smart-mix", "anytime", "anytime-mix")),
}


def _rule_from_default(source: str) -> Rule | None:
    """A rule from a notebook default's type (None: not a literal, or None itself)."""
    try:
        default = ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    shown = json.dumps(default) if isinstance(default, bool | int | float | str) else ""
    example = f" (e.g. {shown}, the notebook's default)" if shown else ""
    if isinstance(default, bool):
        return _flag(shown)
    if isinstance(default, int):

        def whole(v: Any) -> int:
            n = _number_of(v)
            if n != int(n):
                raise ValueError(v)
            return int(n)

        return Rule(f"a whole number{example}", whole)
    if isinstance(default, float):
        return Rule(f"a number{example}", lambda v: float(_number_of(v)))
    for kind, name in ((str, "text"), (list, "a list"), (tuple, "a list"), (dict, "a mapping")):
        if isinstance(default, kind):
            want = list if kind is tuple else kind

            def same(v: Any, want: type = want) -> Any:
                if not isinstance(v, want):
                    raise ValueError(v)
                return v

            what = example or f" (the notebook's default is {source.strip()[:40]})"
            return Rule(name + what, same)
    return None


def _shown(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _as_text_hint(v: Any) -> str:
    """Why a number written as text was refused (YAML reads ``1e5`` and ``"128"`` as text)."""
    if not isinstance(v, str):
        return ""
    try:
        float(v)
    except ValueError:
        return ""
    if re.fullmatch(r"\s*[-+]?\d+(_?\d)*[eE][-+]?\d+\s*", v):
        return "; YAML reads 1e5 as text: write 100000 or 1.0e+5"
    return "; this is text, not a number: write it without quotes"


def _secret_named(name: str) -> bool:
    return bool(_SECRET_PARAM.search(name)) and not _POINTER_PARAM.search(name)


def _strings(v: Any, path: str) -> Iterator[tuple[str, str | None, str]]:
    """(where, nested key name, text) of every string in a parameter value."""
    if isinstance(v, str):
        yield path, None, v
    elif isinstance(v, Mapping):
        for k, x in v.items():
            sub = f"{path}[{k!r}]"
            if isinstance(k, str) and x not in (None, "") and _secret_named(k):
                yield sub, k, ""
            yield from _strings(x, sub)
    elif isinstance(v, list | tuple):
        for i, x in enumerate(v):
            yield from _strings(x, f"{path}[{i}]")


def _secret_problems(params: Mapping[str, Any], env: Mapping[str, str] | None) -> dict[str, str]:
    """Parameter -> why it is a secret: a key's name, its shape, or a set variable's value."""
    known = batch_secrets(params, env)
    out: dict[str, str] = {}
    for key, value in params.items():
        if _secret_named(key) and value not in (None, "", [], {}):
            out[key] = f"parameter {key!r} looks like a secret (its name says it holds a key)"
            continue
        for where, nested, text in _strings(value, key):
            named = sorted(n for n, s in known.items() if s in text)
            if nested is not None:
                out[key] = f"{where} looks like a secret (its name says it holds a key)"
            elif named:
                out[key] = (
                    f"{where} holds the value of the environment variable {named[0]} "
                    "(a secret; value not shown)"
                )
            elif looks_like_key(text):
                out[key] = (
                    f"{where} looks like a secret: it is shaped like an API key or token "
                    "(value not shown)"
                )
            if key in out:
                break
    return out


def _defaults(declared: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The notebooks' own default values (first notebook wins), where they are literals."""
    out: dict[str, Any] = {}
    for names in declared.values():
        for name, source in names.items():
            if name not in out:
                try:
                    out[name] = ast.literal_eval(source)
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    continue
    return out


def _price_names(kind: str) -> list[str]:
    from slamkit.cost import load_prices

    prices = load_prices()
    return sorted(prices.loc[prices["kind"] == kind, "name"].astype(str).unique())


def _combinations(values: Mapping[str, Any], given: Mapping[str, Any], ok: set[str]) -> list[str]:
    """Problems between parameters, on the values the notebooks will see (``values``:
    the notebooks' defaults overlaid with ``given``); only names whose own check passed."""
    out: list[str] = []

    def have(*names: str) -> bool:
        return all(n in values and (n not in given or n in ok) for n in names)

    def shown(name: str) -> str:
        return f"{name} = {_shown(values[name])}" + ("" if name in given else " (default)")

    for url, model, what in (
        ("judge_base_url", "judge_model", "the LLM judge"),
        ("capture_base_url", "capture_model", "capturing references"),
    ):
        if have(url, model) and (values[url] is None) != (values[model] is None):
            if url in given or model in given:
                out.append(f"{shown(url)} and {shown(model)} go together: set both for {what}, "
                           "or neither")  # fmt: skip
    if have("quant_types", "quantize_model") and values["quant_types"]:
        if values["quantize_model"] is None:
            out.append(f"{shown('quant_types')} needs quantize_model, the catalog entry to "
                       "derive the variants from (e.g. SmolLM2-135M-Instruct.Q4_1)")  # fmt: skip
    if have("api_price") and values["api_price"] is not None:
        names = _price_names("api")
        if values["api_price"] not in names:
            out.append(f"{shown('api_price')} is not allowed: the name of an api row of "
                       f"data/prices.csv: {', '.join(names)} (add a row there for another "
                       "API)")  # fmt: skip
    if have("instance", "hourly_usd") and values["hourly_usd"] is None:
        names = _price_names("instance")
        if values["instance"] not in names:
            out.append(f"{shown('instance')} is not allowed: the name of an instance row of "
                       f"data/prices.csv: {', '.join(names)} (or set hourly_usd to price the "
                       "machine yourself)")  # fmt: skip
    return out


def validate_params(
    params: Mapping[str, Any],
    declared: Mapping[str, Mapping[str, str]],
    source: str | None = None,
    env: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``params`` checked and normalized, or one :class:`BatchError` naming every problem.

    ``declared``: notebook stem -> names -> default source (:func:`declared_parameters`).
    ``source`` names the parameters in the message (the file; default: the ``source`` of
    a :class:`ParamsFile`). ``defaults``: values that fill names ``params`` lacks (e.g. the
    CLI's ``--store``), checked too. Refused: names no notebook declares; a value outside
    its rule (:data:`PARAMETERS`, else the type of the notebook's default); contradicting
    combinations; any secret (a key-like name with a value, a key-shaped value, or the value
    of a secret-looking environment variable — keys belong in the environment).

    >>> validate_params({"max_tokens": 64.0}, {"03": {"max_tokens": "128"}}, "my.yaml")
    {'max_tokens': 64}
    >>> try:
    ...     validate_params({"max_tokens": "abc"}, {"03": {"max_tokens": "128"}}, "my.yaml")
    ... except BatchError as exc:
    ...     print(exc)
    my.yaml: max_tokens = 'abc' is not allowed: a whole number >= 1 and <= 65,536 (e.g. 128).
    Nothing was run.
    """
    where = source or getattr(params, "source", None) or "parameters"
    known = set().union(*[set(d) for d in declared.values()]) if declared else set()
    given = dict(params)
    merged = {**given, **{k: v for k, v in (defaults or {}).items() if k in known - set(given)}}
    secret = _secret_problems(merged, env)
    problems = list(secret.values())
    unknown = sorted(set(given) - known - set(secret))
    if unknown:
        close = [
            f"{m[0]!r} for {u!r}" for u in unknown if (m := difflib.get_close_matches(u, known, 1))
        ]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        problems.append(
            f"Unknown parameter(s) {unknown}: no notebook declares them{hint}. Known "
            f"parameters: {sorted(known)}"
        )
    first_default: dict[str, str] = {}
    for names in declared.values():
        for name, src in names.items():
            first_default.setdefault(name, src)
    out: dict[str, Any] = {}
    ok: set[str] = set()
    for key, value in merged.items():
        if key not in known or key in secret:
            continue
        rule = PARAMETERS.get(key) or _rule_from_default(first_default[key])
        if rule is None:
            out[key] = value
            ok.add(key)
            continue
        try:
            out[key] = rule.convert(value)
            ok.add(key)
        except (ValueError, TypeError) as exc:
            detail = exc.detail if isinstance(exc, _Refused) and exc.detail else ""
            origin = "" if key in given else " (default)"
            problems.append(
                f"{key} = {_shown(value)}{origin} is not allowed: {rule.allowed}"
                + (f"; {detail}" if detail else _as_text_hint(value))
            )
    problems += _combinations({**_defaults(declared), **out}, merged, ok)
    if not problems:
        return out
    if len(problems) == 1:
        body = problems[0] + "."
    else:
        body = f"{len(problems)} problems: " + " | ".join(
            f"({i}) {p}" for i, p in enumerate(problems, 1)
        ) + "."  # fmt: skip
    if secret:
        body += (
            " Parameters are copied into every executed notebook and the report, so a key "
            "does not belong there: remove it and keep it in the environment (export "
            "OPENAI_API_KEY=...; the judge and the reference capture read it from there)."
        )
    raise BatchError(f"{where}: {body} Nothing was run.")


def check_params(
    params: Mapping[str, Any],
    declared: Mapping[str, Mapping[str, Any]],
    source: str | None = None,
) -> dict[str, Any]:
    """:func:`validate_params` (kept for callers of the earlier name)."""
    return validate_params(params, declared, source)


def _resolve_paths(params: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative ``*_path`` / ``*_dir`` values and ``*_paths`` entries (paths or globs) are
    taken relative to ``base``; the notebooks run in their own folder."""
    out = dict(params)
    for k, v in params.items():
        if (k.endswith("_path") or k.endswith("_dir")) and isinstance(v, str) and v:
            if v != ":memory:" and not Path(v).expanduser().is_absolute():
                out[k] = str((base / v).resolve())
        elif k.endswith("_paths") and isinstance(v, list):
            out[k] = [
                os.path.join(base, e) if isinstance(e, str) and e and not e.startswith("~")
                and not os.path.isabs(e) else e
                for e in v
            ]  # fmt: skip
    return out


# -- secrets -------------------------------------------------------------------------
_KEY_ENV_PARAM = re.compile(r"(^|_)api_?key_env$", re.I)


def batch_secrets(
    params: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Secrets to redact from a batch: secret-looking environment variables plus the
    variables that ``api_key_env`` / ``*_api_key_env`` parameters name."""
    named = [v for k, v in params.items() if _KEY_ENV_PARAM.search(k) and isinstance(v, str) and v]
    return environment_secrets(env, names=named)


def _redact_file(path: Path, secrets: Mapping[str, str]) -> None:
    if secrets and path.exists():
        text = path.read_text(encoding="utf-8")
        clean = redact(text, secrets)
        if clean != text:
            path.write_text(clean, encoding="utf-8")


def _last_started_cell(executed: Path) -> tuple[int | None, str]:
    """(index, first source line) of the last cell papermill started in ``executed``."""
    try:
        import nbformat

        nb = nbformat.read(str(executed), as_version=4)
    except Exception:  # noqa: BLE001 - missing or half-written file: no cell to name
        return None, ""
    found: tuple[int | None, str] = (None, "")
    for i, cell in enumerate(nb.cells):
        if cell.get("metadata", {}).get("papermill", {}).get("start_time"):
            lines = cell.source.strip().splitlines()
            found = (i, lines[0][:80] if lines else "")
    return found


# -- execution -----------------------------------------------------------------------
@contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send this process's (and so the kernel's) file descriptor 2 to ``path`` for a while.

    Kernels inherit stderr: llama.cpp's loader messages and DuckDB's exit-time notices go
    to the notebook's log file instead of the terminal.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def run_batch(
    params: Mapping[str, Any] | str | Path,
    out_dir: str | Path | None = None,
    notebooks_dir: str | Path | None = None,
    only: Sequence[str] | None = None,
    kernel_name: str = "python3",
    html: bool = True,
    report_notebook: str = REPORT_NOTEBOOK,
    log: Callable[[str], None] = print,
    defaults: Mapping[str, Any] | None = None,
) -> BatchResult:
    """Execute the series with ``params``; keep executed notebooks; render ``report.html``.

    ``params``: a dict or a YAML/JSON file, checked first (:func:`validate_params`: one
    :class:`BatchError` naming every bad parameter, before any notebook runs). Relative
    ``*_path``/``*_dir`` values (and ``*_paths`` entries) are taken relative to the current
    directory. ``only``: run just these notebooks (name prefixes
    such as ``"07"``). ``defaults`` fill names a notebook declares but ``params`` lacks
    (the CLI passes its ``--store`` as ``store_path``). A failing notebook stops the
    batch with :class:`NotebookFailedError` naming the notebook, the cell and the kernel's
    log, whatever stopped it (an exception in a cell, a dead kernel, a cell timeout); its
    executed copy is kept. The executed notebook and the log are redacted in every case,
    Ctrl-C included (``KeyboardInterrupt`` is re-raised after redaction).
    """
    papermill: Any = require("papermill")
    if not isinstance(params, Mapping):
        params = load_params(params)
    source = getattr(params, "source", None) or "parameters passed to run_batch"
    nb_dir = Path(notebooks_dir or NOTEBOOKS_DIR).resolve()
    notebooks = series(nb_dir)
    declared = {p.stem: declared_parameters(p) for p in notebooks}
    # every check before anything runs or is written (an output folder included)
    params = validate_params(params, declared, source, defaults=defaults)
    if only:
        notebooks = [p for p in notebooks if any(p.stem.startswith(o) for o in only)]
        if not notebooks:
            raise BatchError(f"No notebook in {nb_dir} matches {list(only)}.")
    params = _resolve_paths(params, Path.cwd())
    if out_dir is None:
        store = params.get("store_path")
        out_dir = Path(store).parent / "report" if store else Path("data/runs/batch")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    secrets = batch_secrets(params)
    result = BatchResult(out_dir=out)
    for i, nb in enumerate(notebooks, 1):
        mine = {k: v for k, v in params.items() if k in declared[nb.stem]}
        target = out / nb.name
        kernel_log = out / "logs" / f"{nb.stem}.log"
        kernel_log.parent.mkdir(exist_ok=True)
        kernel_log.write_text("")
        if target.exists():
            target.unlink()  # a stale copy from an earlier batch would name the wrong cell
        log(f"[{i}/{len(notebooks)}] {nb.stem} ...")
        t0 = time.perf_counter()
        try:
            with _stderr_to(kernel_log):
                papermill.execute_notebook(
                    str(nb), str(target), parameters=mine, cwd=str(nb_dir),
                    kernel_name=kernel_name, progress_bar=False, log_output=False,
                    report_mode=False,
                )  # fmt: skip
        except papermill.PapermillExecutionError as exc:
            first = (exc.source or "").strip().splitlines()
            where = first[0][:80] if first else ""
            raise NotebookFailedError(
                redact(
                    f"Notebook {nb.name} failed in cell {exc.cell_index} (execution count "
                    f"{exc.exec_count}: {where!r}): {exc.ename}: {exc.evalue}. The executed "
                    f"notebook with the full traceback is {target}; the kernel's log is "
                    f"{kernel_log}.",
                    secrets,
                )
            ) from None
        except Exception as exc:  # dead kernel, cell timeout, kernel that would not start
            index, where = _last_started_cell(target)
            cell = (
                f"in cell {index} ({where!r}, the last cell that started)"
                if index is not None
                else "before any cell started"
            )
            raise NotebookFailedError(
                redact(
                    f"Notebook {nb.name} stopped {cell}: {type(exc).__name__}: {exc}. The "
                    f"executed notebook (outputs up to that cell) is {target}; the kernel's "
                    f"log is {kernel_log}.",
                    secrets,
                )
            ) from None
        finally:
            # also on KeyboardInterrupt (re-raised as is): papermill writes the notebook
            # while cells run, so whatever a cell printed is on disk already
            result.seconds[nb.stem] = time.perf_counter() - t0
            _redact_file(target, secrets)
            _redact_file(kernel_log, secrets)
        result.notebooks.append(target)
        log(f"    done in {result.seconds[nb.stem]:.1f} s -> {target}")
    if html:
        src = next((p for p in result.notebooks if p.stem == report_notebook), None)
        src = src or (result.notebooks[-1] if result.notebooks else None)
        if src is not None:
            result.report = render_html(src, out / "report.html", exclude_input=True)
            _redact_file(result.report, secrets)
            log(f"report: {result.report}")
    return result


# -- HTML ------------------------------------------------------------------------------
_TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}
{%- if resources.slamkit_plotly_js -%}
<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: 'local'};</script>
<script type="text/javascript">{{ resources.slamkit_plotly_js }}</script>
{%- endif -%}
{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def _plotly_to_html(nb: Any) -> bool:
    """Turn plotly mimetype outputs into inline divs; drop live-widget views. Any plots?"""
    import plotly.io as pio

    found = False
    for cell in nb.cells:
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            data = o.get("data") if isinstance(o, dict) else None
            if data and PLOTLY_MIME in data:
                fig = data[PLOTLY_MIME]
                div = pio.to_html(
                    {"data": fig.get("data", []), "layout": fig.get("layout", {})},
                    include_plotlyjs=False, full_html=False, validate=False,
                    config=fig.get("config") or {"responsive": True},
                )  # fmt: skip
                o["data"] = {"text/html": div}
                found = True
            elif data and WIDGET_MIME in data:
                data.pop(WIDGET_MIME)
                if set(data) <= {"text/plain"}:
                    continue  # a live widget has nothing to show in a static page
            kept.append(o)
        cell["outputs"] = kept
    return found


def render_html(notebook: str | Path, target: str | Path, exclude_input: bool = True) -> Path:
    """Render an executed notebook to one offline HTML file (plotly.js inline, once)."""
    import nbformat
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    has_plots = _plotly_to_html(nb)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[DictLoader({"slamkit_report.html.j2": _TEMPLATE})],
        template_file="slamkit_report.html.j2",
        exclude_input=exclude_input,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    resources: dict[str, Any] = {"metadata": {"name": Path(notebook).stem}}
    if has_plots:
        from plotly.offline import get_plotlyjs

        resources["slamkit_plotly_js"] = get_plotlyjs()
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    if re.search(r"<script[^>]+src=[\"']?(https?:)?//", body, re.I):
        raise BatchError(f"{target}: the report would load a script from the network.")
    out = Path(target)
    out.write_text(body, encoding="utf-8")
    return out
