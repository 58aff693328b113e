"""Import files written by the SLaM tool (format: ../shared/docs/METHOD.md appendix A).

* use-case file ``data/*.json``: ``{"prompt", "prompt_disc", "outputs": {model: [text]}}``
  -> one task item per file; outputs of reference models (``gpt-4`` and the like) become
  ``reference_outputs``, every other model's become ``generations``.
* run file ``runs/<run_id>/<model>.json``: ``{"outputs": [{"response", "time"}],
  "full_prompt", "avg_time", "model_name"}`` -> generations with their latency.
* human-evaluation result ``results/<worker>_<set>.json`` -> ``human_judgments``; response
  ids are resolved through ``.human_eval_config/responses.json`` and matched to the
  imported generations/references by model, item and text.

Imported models get ``model_id = "slam:<name>"`` (SLaM files carry no GGUF hash) and
generations ``seed = -1`` (unknown). Importing a file twice writes nothing new.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from slamkit.errors import ReferenceImportError
from slamkit.keys import content_key
from slamkit.store import Store, jobs

DEFAULT_REFERENCE = r"gpt-?4"
_CHOICE = {"response a": "left", "response b": "right", "about the same": "tie"}


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReferenceImportError(f"{path}: file not found.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReferenceImportError(f"{path}: not valid JSON ({exc}).") from None


def _need(path: Path, obj: Any, field: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(obj, dict) or field.split(".")[-1] not in obj:
        raise ReferenceImportError(
            f"{path}: missing field {field!r} (see METHOD.md appendix A for the SLaM format)."
        )
    value = obj[field.split(".")[-1]]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ReferenceImportError(
            f"{path}: field {field!r} must be {names}, got {type(value).__name__}."
        )
    return value


def _ensure_task(store: Store, task_id: str) -> None:
    store.insert(
        "tasks",
        {"task_id": task_id, "template": "{prompt}", "source": "slam-import",
         "description": "Prompts imported from SLaM tool files"},
    )  # fmt: skip


def _ensure_model(store: Store, name: str, path: Path) -> str:
    model_id = f"slam:{name}"
    store.insert(
        "models",
        {"model_id": model_id, "name": name, "path": str(path), "source": "slam-import"},
    )
    return model_id


def _run(store: Store, path: Path) -> str:
    run_id = content_key("slam-import-run", file=path.name, data=path.read_bytes().hex()[:4096])
    store.insert("runs", {"run_id": run_id, "kind": "import", "params": {"slam_file": str(path)}})
    return run_id


def _generation(
    task_id: str, item_id: str, model_id: str, i: int, text: str, run_id: str, **extra: Any
) -> dict[str, Any]:
    key = content_key("slam-generation", task=task_id, item=item_id, model=model_id, i=i, t=text)
    return {
        "gen_key": key, "run_id": run_id, "model_id": model_id, "task_id": task_id,
        "item_id": item_id, "sample_index": i, "seed": -1,
        "sampling": {"source": "slam-import"}, "text": text, "backend": "slam-import",
        "latency_s": extra.get("latency_s"),
    }  # fmt: skip


def import_slam_usecase(
    store: Store,
    path: str | Path,
    task_id: str = "slam",
    item_id: str | None = None,
    reference_models: str = DEFAULT_REFERENCE,
) -> dict[str, int]:
    """Import one use-case file; models matching the regex ``reference_models``
    (case-insensitive) become references. Returns rows written per table."""
    path = Path(path)
    data = _load(path)
    prompt = _need(path, data, "prompt", str)
    disc = data.get("prompt_disc") if isinstance(data, dict) else None
    outputs = _need(path, data, "outputs", dict)
    item_id = item_id or path.stem
    ref_re = re.compile(reference_models, re.I)
    refs: list[dict[str, Any]] = []
    gens: list[tuple[str, int, str]] = []
    for model, responses in outputs.items():
        if not isinstance(responses, list):
            raise ReferenceImportError(
                f"{path}: field 'outputs.{model}' must be a list of responses, "
                f"got {type(responses).__name__}."
            )
        for i, text in enumerate(responses):
            if not isinstance(text, str):
                raise ReferenceImportError(
                    f"{path}: field 'outputs.{model}[{i}]' must be a string, "
                    f"got {type(text).__name__}."
                )
            if ref_re.search(model):
                refs.append(
                    {"ref_id": content_key("slam-ref", task=task_id, item=item_id,
                                           model=model, i=i, t=text),
                     "task_id": task_id, "item_id": item_id, "source_model": model,
                     "sample_index": i, "text": text, "origin": f"{path}#outputs.{model}[{i}]"}
                )  # fmt: skip
            else:
                gens.append((model, i, text))
    # everything validated: now write
    _ensure_task(store, task_id)
    run_id = _run(store, path) if gens else None
    gen_rows = [
        _generation(task_id, item_id, _ensure_model(store, m, path), i, t, str(run_id))
        for m, i, t in gens
    ]
    n_items = store.insert_many(
        "items",
        [{"task_id": task_id, "item_id": item_id, "position": None,
          "fields": {"prompt": prompt, "prompt_disc": disc}, "prompt": prompt}],
    )  # fmt: skip
    return {
        "items": n_items,
        "reference_outputs": store.insert_many("reference_outputs", refs),
        "generations": store.insert_many("generations", gen_rows),
    }


def import_slam_run(store: Store, path: str | Path, task_id: str = "slam") -> dict[str, int]:
    """Import a run file: its ``full_prompt`` is matched to an item of ``task_id`` by prompt
    text (a new item ``run:<hash>`` is created when none matches); ``time`` -> latency_s."""
    path = Path(path)
    data = _load(path)
    model = _need(path, data, "model_name", str)
    prompt = _need(path, data, "full_prompt", str)
    outputs = _need(path, data, "outputs", list)
    for i, out in enumerate(outputs):
        _need(path, out, f"outputs[{i}].response", str)
        if out.get("time") is not None and not isinstance(out["time"], (int, float)):
            raise ReferenceImportError(f"{path}: field 'outputs[{i}].time' must be seconds.")
    _ensure_task(store, task_id)
    hit = jobs.item_for_prompt(store, task_id, prompt)
    n_items = 0
    if hit is None:
        item_id = "run:" + content_key("slam-prompt", p=prompt)[:12]
        n_items = store.insert_many(
            "items",
            [{"task_id": task_id, "item_id": item_id, "fields": {"prompt": prompt},
              "prompt": prompt}],
        )  # fmt: skip
    else:
        item_id = hit
    run_id = _run(store, path)
    model_id = _ensure_model(store, model, path)
    gens = []
    for i, out in enumerate(outputs):
        gens.append(
            _generation(task_id, item_id, model_id, i, out["response"], run_id,
                        latency_s=out.get("time"))
        )  # fmt: skip
    return {"items": n_items, "generations": store.insert_many("generations", gens)}


def _find_responses(path: Path) -> Path | None:
    for base in (path.parent, path.parent.parent, path.parent.parent.parent):
        cand = base / ".human_eval_config" / "responses.json"
        if cand.is_file():
            return cand
    return None


def _resolve_side(
    store: Store, task_id: str, item_id: str, model: str, rid: str, texts: dict[str, str]
) -> tuple[str, str]:
    text = texts.get(str(rid))
    if text is not None:
        gen_key = jobs.generation_with_text(store, task_id, item_id, f"slam:{model}", text)
        if gen_key is not None:
            return "generation", gen_key
        ref_id = jobs.reference_with_text(store, task_id, item_id, model, text)
        if ref_id is not None:
            return "reference", ref_id
    return "slam_response", f"{model}/{rid}"


def import_slam_human_eval(
    store: Store,
    path: str | Path,
    responses: str | Path | None = None,
    task_id: str = "slam",
    prompt_items: dict[str, str] | None = None,
) -> int:
    """Import one human/LLM evaluation result file into ``human_judgments``.

    ``responses`` (``.human_eval_config/responses.json``) is looked for next to the file's
    folders when not given. ``prompt_items`` maps the file's prompt ids to item ids
    (default: the id as text). A side that matches no imported generation or reference
    by (model, item, text) is stored as kind ``slam_response`` with id ``model/response_id``.
    Returns rows written (0 on a second import).
    """
    path = Path(path)
    data = _load(path)
    worker = str(_need(path, data, "worker_id", (str, int)))
    evals = _need(path, data, "evals", list)
    resp_path = Path(responses) if responses else _find_responses(path)
    texts = {str(k): v for k, v in _load(resp_path).items()} if resp_path else {}
    rows = []
    for n, ev in enumerate(evals):
        result = _need(path, ev, f"evals[{n}].result", dict)
        question = _need(path, ev, f"evals[{n}].question", list)
        if len(question) != 2 or not isinstance(question[1], dict) or len(question[1]) != 2:
            raise ReferenceImportError(
                f"{path}: field 'evals[{n}].question' must be [prompt_id, "
                "{model_a: response_id, model_b: response_id}]."
            )
        item_id = (prompt_items or {}).get(str(question[0]), str(question[0]))
        (ma, ra), (mb, rb) = question[1].items()
        left = _resolve_side(store, task_id, item_id, ma, ra, texts)
        right = _resolve_side(store, task_id, item_id, mb, rb, texts)
        feedback = result.get("feedback")
        when = ev.get("time")
        for crit, answer in result.items():
            if crit == "feedback":
                continue
            choice = _CHOICE.get(str(answer).strip().lower())
            if choice is None:
                raise ReferenceImportError(
                    f"{path}: field 'evals[{n}].result.{crit}' is {answer!r}; expected "
                    "'Response A', 'Response B' or 'About the Same'."
                )
            rows.append(
                {"annotator": worker, "task_id": task_id, "item_id": item_id,
                 "left_kind": left[0], "left_id": left[1], "right_kind": right[0],
                 "right_id": right[1], "criterion": crit, "choice": choice,
                 "reason": feedback or None, "source": f"slam-import:{path.name}",
                 "when": when}
            )  # fmt: skip
    written = 0
    for row in rows:  # append-only table: skip rows already imported from this file
        when = row.pop("when")
        if jobs.human_judgment_stored(store, row, when):
            continue
        if when is not None:
            row["created_at"] = _ts(when)
        written += store.insert_many("human_judgments", [row])
    return written


def _ts(unix: Any) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(float(unix), tz=UTC).replace(tzinfo=None)


def import_slam(
    store: Store, path: str | Path, task_id: str = "slam", **kwargs: Any
) -> dict[str, int]:
    """Import a SLaM file, or every SLaM file under a folder (use cases first, then run
    files, then evaluation results). The kind of each file is told by its fields."""
    path = Path(path)
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    files = [f for f in files if f.name != "responses.json"]
    kinds: dict[str, list[Path]] = {"usecase": [], "run": [], "human": []}
    for f in files:
        data = _load(f)
        if isinstance(data, dict) and isinstance(data.get("outputs"), dict):
            kinds["usecase"].append(f)
        elif isinstance(data, dict) and "model_name" in data and "outputs" in data:
            kinds["run"].append(f)
        elif isinstance(data, dict) and "evals" in data:
            kinds["human"].append(f)
        elif not path.is_dir():
            raise ReferenceImportError(
                f"{f}: not a SLaM use-case (fields prompt, outputs), run (model_name, "
                "outputs) or evaluation result (worker_id, evals) file."
            )
    total: dict[str, int] = {}

    def add(counts: dict[str, int]) -> None:
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v

    for f in kinds["usecase"]:
        add(import_slam_usecase(store, f, task_id=task_id, **kwargs))
    for f in kinds["run"]:
        add(import_slam_run(store, f, task_id=task_id))
    for f in kinds["human"]:
        add({"human_judgments": import_slam_human_eval(store, f, task_id=task_id)})
    total["files"] = len(kinds["usecase"]) + len(kinds["run"]) + len(kinds["human"])
    return total


def add_parser(sub: Any) -> None:
    """``slamkit import-slam PATH``: a SLaM file or folder into the store."""
    s = sub.add_parser("import-slam", help="import SLaM tool files (use cases, runs, results)")
    s.add_argument("path", help="a SLaM JSON file or the tool's folder")
    s.add_argument("--task", default="slam", help="task id to import into")
    s.add_argument("--reference-models", default=DEFAULT_REFERENCE,
                   help="regex of model names that are references (default: gpt-?4)")  # fmt: skip
    s.set_defaults(func=_cli)


def _cli(args: Any) -> int:
    from slamkit.store import open_store

    with open_store(args.store) as st:
        counts = import_slam(st, args.path, task_id=args.task,
                             reference_models=args.reference_models)  # fmt: skip
    print(", ".join(f"{k}={v}" for k, v in counts.items()) + f" ({args.store})")
    return 0
