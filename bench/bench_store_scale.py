"""Benchmark: slamkit's analysis on a store of a million generations and a million scores.

Builds (once; reused while its manifest matches) ``data/runs/scale/slamkit.duckdb`` from
the default store of ``make run`` with :func:`slamkit.store.synthetic.grow` (29 synthetic
variants x all 805 AlpacaEval items x 43 samples, one ROUGE-L score each, texts of
0.5-1.5 KB), then measures, each in a fresh Python process (so a process's peak RSS,
``ru_maxrss``, is that computation's own; the RSS after the bare imports is reported too):

a. the summary table as ``notebooks/09_report.ipynb`` computes it: ``Study(...)`` with
   ``n_items=None`` (all items) then ``study.headline("rougeL")``: time and peak RSS;
b. one hand-written DuckDB query computing the same per-variant numbers (count, p50/p95
   latency, mean decode speed, mean score over items), checked against (a); the ratio a/b;
c. the Pareto explorer: ``TradeoffExplorer.for_study`` (construction) and one redraw
   after a control change (utilization; item subset);
d. planning a sweep of every variant x 805 items x 43 samples against the store: the
   content keys computed as the runner does (:func:`slamkit.runner.plan_cells`), the
   existence check alone (:func:`slamkit.store.jobs.stored_generation_keys`), the whole
   planning as ``run_sweep`` does it (per model: keys, then the check), and a fully cached
   ``run_sweep`` of the synthetic variants (no model is loaded).

Each figure is the median of ``--repeats`` fresh processes. A missed target prints FAIL
(the exit status stays 0: a benchmark, not a test).

    .venv/bin/python bench/bench_store_scale.py [--repeats 3] [--rebuild] [--source PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT / "data" / "runs" / "default" / "slamkit.duckdb"
SCALE_DIR = ROOT / "data" / "runs" / "scale"
TASK = "alpaca_eval"
METRIC = "rougeL"
#: the parameters cell of notebooks/09_report.ipynb (data/default_params.yaml), all items
STUDY = {
    "task_id": TASK, "models": [], "n_items": None, "temperature": 0.0, "max_tokens": 128,
    "reference_model": "gpt4_1106_preview", "api_price": "gpt-4", "instance": "aws-c7i.large",
    "hourly_usd": None, "utilization": 0.5, "requests_per_month": 100_000,
    "conformity_metric": "rougeL", "conformity_tau": 0.3,
}  # fmt: skip
TARGETS = {"summary_s": 1.0, "summary_rss_mb": 500.0, "redraw_s": 0.3, "plan_s": 2.0}


def _rss_mb() -> float:
    """Peak resident memory of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the store -------------------------------------------------------------------------------
def _manifest(source: Path, variants: int, samples: int, seed: int) -> dict[str, Any]:
    st = source.stat()
    code = (ROOT / "slamkit" / "store" / "synthetic.py").read_bytes()
    return {
        "source": str(source.resolve()), "source_bytes": st.st_size,
        "source_mtime_ns": st.st_mtime_ns, "variants": variants, "samples": samples,
        "seed": seed, "synthetic_sha256": hashlib.sha256(code).hexdigest()[:16],
    }  # fmt: skip


def scale_store(source: Path, variants: int, samples: int, seed: int, rebuild: bool) -> Path:
    """The scale store, grown from ``source`` unless a matching one is there."""
    if not source.is_file():
        raise SystemExit(
            f"No default store at {source}: build it first with `make run` (or pass "
            "--source PATH to another slamkit store with generations and scores)."
        )
    target = SCALE_DIR / "slamkit.duckdb"
    manifest_path = SCALE_DIR / "manifest.json"
    want = _manifest(source, variants, samples, seed)
    if not rebuild and target.is_file() and manifest_path.is_file():
        have = json.loads(manifest_path.read_text())
        if have.get("build") == want and have.get("target_bytes") == target.stat().st_size:
            print(f"reusing {target} (built in {have['seconds']:.0f} s; --rebuild to redo)")
            return target
    print(f"building {target} from {source} ({variants} variants x 805 items x {samples})")
    manifest_path.unlink(missing_ok=True)
    # in a child process too: this process stays small, and a child's ru_maxrss starts
    # from its parent's resident size at fork/exec
    env = {**os.environ, "SCALE_BUILD": json.dumps(want)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", "build", "--store", str(target)], env=env, cwd=ROOT
    )
    if proc.returncode != 0:
        raise SystemExit(f"building {target} failed (exit {proc.returncode})")
    return target


def child_build(store: str) -> dict[str, Any]:
    from slamkit.references import load_alpaca_eval
    from slamkit.store.synthetic import grow
    from slamkit.tasks import messages_for

    want = json.loads(os.environ["SCALE_BUILD"])
    res = grow(
        want["source"], store, want["variants"], want["samples"], want["seed"], task_id=TASK,
        metrics=(METRIC,), messages=messages_for, prepare=load_alpaca_eval, overwrite=True,
    )  # fmt: skip
    out = {"build": want, "target_bytes": Path(store).stat().st_size, "seconds": res.seconds,
           "generations": res.generations, "scores": res.scores, "rss_mb": _rss_mb()}  # fmt: skip
    (Path(store).parent / "manifest.json").write_text(json.dumps(out, indent=1))
    return out


# -- the measurements (each runs in its own process: --child NAME) ----------------------------
def child_imports(store: str) -> dict[str, Any]:
    from slamkit import Study, widgets  # noqa: F401

    return {"rss_mb": _rss_mb()}


def _study(store: str) -> Any:
    from slamkit import Study

    s = STUDY
    return Study(
        store, s["task_id"], s["models"], s["n_items"], s["temperature"], s["max_tokens"],
        s["reference_model"], api_price=s["api_price"], instance=s["instance"],
        hourly_usd=s["hourly_usd"], utilization=s["utilization"],
        requests_per_month=s["requests_per_month"], conformity_metric=s["conformity_metric"],
        conformity_tau=s["conformity_tau"],
    )  # fmt: skip


def child_summary(store: str) -> dict[str, Any]:
    """09_report's summary table; stages timed in the order headline() needs them."""
    from slamkit import Study  # noqa: F401  (the notebook's import, before the clock)

    base = _rss_mb()
    stages: dict[str, float] = {}
    t0 = last = time.perf_counter()

    def stage(name: str) -> None:
        nonlocal last
        now = time.perf_counter()
        stages[name] = now - last
        last = now

    study = _study(store)
    stage("Study() (scope: sampling filter, variant check)")
    perf = study.perf
    stage("perf (variant_summary query)")
    _ = study.scores
    stage("scores (item_means query)")
    _ = study.refs
    stage("refs (references query)")
    _ = study.reference
    stage("reference (cost.reference_point)")
    quality = study.quality(METRIC)
    stage("quality (bootstrap CIs, frames.quality_summary)")
    table = study.headline(METRIC)
    stage("headline (frames.headline)")
    total = time.perf_counter() - t0
    q = quality.set_index("variant")["mean"]
    check = {
        str(r.variant): [int(r.n), float(r.p50_latency_s), float(r.p95_latency_s),
                         float(r.decode_tps), float(q.get(r.variant, float("nan")))]
        for r in perf.itertuples(index=False)
    }  # fmt: skip
    return {
        "seconds": total, "rss_mb": _rss_mb(), "base_rss_mb": base, "stages": stages,
        "rows": len(table), "check": check,
    }  # fmt: skip


#: the same per-variant numbers as (a), by hand: one statement
DIRECT_SQL = """
WITH s AS (  -- the sampling settings asked for, as one list (a filter, not a join)
    SELECT list(sampling) AS keep
    FROM (SELECT DISTINCT sampling FROM generations WHERE task_id = $task)
    WHERE coalesce(TRY_CAST(json_extract_string(sampling, '$.temperature') AS DOUBLE),
                   $temperature) = $temperature
      AND coalesce(TRY_CAST(json_extract_string(sampling, '$.max_tokens') AS BIGINT),
                   $max_tokens) = $max_tokens
), g AS (
    SELECT coalesce(m.name, g.model_id) AS variant, g.gen_key, g.item_id, g.latency_s,
           g.decode_tps
    FROM generations g LEFT JOIN models m USING (model_id)
    WHERE g.task_id = $task AND g.error IS NULL
      AND list_contains((SELECT keep FROM s), g.sampling)
), perf AS (
    SELECT variant, count(*) AS n, quantile_cont(latency_s, 0.5) AS p50,
           quantile_cont(latency_s, 0.95) AS p95, avg(decode_tps) AS decode
    FROM g GROUP BY 1
), per_item AS (
    SELECT g.variant, g.item_id, avg(sc.value) AS v FROM g JOIN scores sc USING (gen_key)
    WHERE sc.metric = $metric AND sc.value IS NOT NULL GROUP BY 1, 2
)
SELECT perf.*, q.quality FROM perf
LEFT JOIN (SELECT variant, avg(v) AS quality FROM per_item GROUP BY 1) q USING (variant)
ORDER BY variant
"""


def child_duckdb(store: str) -> dict[str, Any]:
    import duckdb

    base = _rss_mb()
    t0 = time.perf_counter()
    with duckdb.connect(store, read_only=True) as db:
        rows = db.execute(
            DIRECT_SQL,
            {"task": TASK, "temperature": STUDY["temperature"],
             "max_tokens": STUDY["max_tokens"], "metric": METRIC},
        ).fetchall()  # fmt: skip
    total = time.perf_counter() - t0
    check = {str(r[0]): [int(r[1]), *(float("nan") if x is None else float(x) for x in r[2:])]
             for r in rows}  # fmt: skip
    return {"seconds": total, "rss_mb": _rss_mb(), "base_rss_mb": base, "check": check}


def child_widget(store: str) -> dict[str, Any]:
    from slamkit import widgets

    base = _rss_mb()
    t0 = time.perf_counter()
    study = _study(store)
    ex = widgets.TradeoffExplorer.for_study(study, METRIC)
    build = time.perf_counter() - t0
    out: dict[str, Any] = {"build_s": build, "base_rss_mb": base}
    subset = next(o for o in ex.controls["subset"].options if o != "all")
    for name, control, value in (
        ("utilization", "utilization", 0.6),
        ("subset", "subset", subset),
        ("variants", "variants", tuple(ex.controls["variants"].value)[:10]),
    ):
        renders = ex.renders
        t0 = time.perf_counter()
        ex.controls[control].value = value
        out[f"redraw_{name}_s"] = time.perf_counter() - t0
        if ex.renders != renders + 1 or ex.error:
            raise RuntimeError(f"redraw after {control} failed: {ex.error}")
    out["rss_mb"] = _rss_mb()
    return out


def child_plan(store: str) -> dict[str, Any]:
    from slamkit.backends.base import Sampling
    from slamkit.catalog import ModelInfo
    from slamkit.runner import plan_cells, run_sweep
    from slamkit.store import Store, jobs
    from slamkit.store.synthetic import model_rows
    from slamkit.tasks import get_task, load_items

    base = _rss_mb()
    n_samples = int(os.environ["SCALE_SAMPLES"])
    sampling = Sampling(temperature=STUDY["temperature"], max_tokens=STUDY["max_tokens"])
    out: dict[str, Any] = {"base_rss_mb": base}
    with Store(store) as st:  # held, as a sweep holds it
        t0 = time.perf_counter()
        task = get_task(st, TASK)
        items_df = load_items(st, TASK)
        items = list(zip(items_df["item_id"], items_df["prompt"], strict=True))
        models = [
            ModelInfo(
                path=Path(r["path"]), name=r["name"], family=r["family"],
                architecture=r["architecture"], n_params=int(r["n_params"] or 0),
                quant=r["quant"], tensor_types=json.loads(r["tensor_types"] or "{}"),
                size_bytes=int(r["size_bytes"] or 0), context_length=r["context_length"],
                has_chat_template=bool(r["has_chat_template"]),
                chat_template=r["chat_template"], license=r["license"] or "",
                license_source="store", sha256=r["model_id"], source=r["source"] or "path",
                parent_model_id=r["parent_model_id"],
            )
            for r in model_rows(st, TASK)
        ]  # fmt: skip
        out["read_s"] = time.perf_counter() - t0
        # the whole planning as run_sweep does it: per model, its keys then the check
        t0 = time.perf_counter()
        keys_s = check_s = 0.0
        per_model: list[list[str]] = []
        found = 0
        for m in models:
            t1 = time.perf_counter()
            cells = plan_cells(m, TASK, items, task.system_prompt, [sampling], n_samples, 0)
            keys = [c.key for c in cells]
            t2 = time.perf_counter()
            found += len(jobs.stored_generation_keys(st, keys))
            check_s += time.perf_counter() - t2
            keys_s += t2 - t1
            per_model.append(keys)
        out["plan_s"] = out["read_s"] + time.perf_counter() - t0
        out["keys_s"], out["check_per_model_s"] = keys_s, check_s
        all_keys = [k for keys in per_model for k in keys]
        # the existence check alone, all keys at once
        t0 = time.perf_counter()
        done = jobs.stored_generation_keys(st, all_keys)
        out["check_s"] = time.perf_counter() - t0
        out.update(planned=len(all_keys), stored=len(done), found_per_model=found)
        # a fully cached rerun of the synthetic variants through the runner itself
        synth = [m for m, keys in zip(models, per_model, strict=True) if m.source == "synthetic"]
        synth_keys = [k for m, ks in zip(models, per_model, strict=True)
                      if m.source == "synthetic" for k in ks]  # fmt: skip
        if synth and len(jobs.stored_generation_keys(st, synth_keys, ok_only=False)) == len(
            synth_keys
        ):

            def no_backend(model: Any) -> Any:
                raise RuntimeError(f"the cached rerun tried to load {model.name}")

            t0 = time.perf_counter()
            res = run_sweep(
                st, synth, TASK, sampling, n_samples=n_samples, seed=0,
                backend_factory=no_backend, retry_errors=False, progress=False,
            )  # fmt: skip
            out["rerun_s"] = time.perf_counter() - t0
            out["rerun_cells"], out["rerun_calls"] = res.planned, res.model_calls
    out["rss_mb"] = _rss_mb()
    return out


CHILDREN = {
    "imports": child_imports, "summary": child_summary, "duckdb": child_duckdb,
    "widget": child_widget, "plan": child_plan,
}  # fmt: skip


def run_child(name: str, store: Path, samples: int) -> dict[str, Any]:
    env = {**os.environ, "SCALE_SAMPLES": str(samples)}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", name, "--store", str(store)],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"child {name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(lines[-1][len("RESULT ") :]))


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    vals = [float(r[key]) for r in runs if key in r]
    return statistics.median(vals) if vals else float("nan")


# -- the report ---------------------------------------------------------------------------------
def machine() -> str:
    import psutil

    from slamkit.engine import hardware_info

    cpu = hardware_info()["cpu"]
    ram = psutil.virtual_memory().total / 2**30
    py = platform.python_version()
    return f"{cpu}, {os.cpu_count()} logical cores, {ram:.1f} GiB RAM, Python {py}"


def _compare(a: dict[str, list[float]], b: dict[str, list[float]]) -> str:
    """Largest differences between the two tables (they must agree)."""
    if set(a) != set(b):
        return f"DIFFERENT variants: {sorted(set(a) ^ set(b))}"
    worst = [0.0] * 5
    for v in a:
        for i, (x, y) in enumerate(zip(a[v], b[v], strict=True)):
            if x == x or y == y:  # skip NaN on both sides
                worst[i] = max(worst[i], abs(x - y) / max(abs(y), 1e-12))
    names = ["n", "p50", "p95", "decode", "mean score"]
    ok = max(worst) < 1e-9
    return (
        ("same table" if ok else "TABLES DIFFER")
        + " (max relative difference: "
        + ", ".join(f"{n} {w:.1e}" for n, w in zip(names, worst, strict=True))
        + ")"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the real store")
    ap.add_argument("--variants", type=int, default=29)
    ap.add_argument("--samples", type=int, default=43)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per figure")
    ap.add_argument("--rebuild", action="store_true", help="grow the scale store again")
    ap.add_argument("--only", help="comma-separated measurements (" + ",".join(CHILDREN) + ")")
    ap.add_argument("--child", choices=sorted([*CHILDREN, "build"]), help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        fn = child_build if args.child == "build" else CHILDREN[args.child]
        print("RESULT " + json.dumps(fn(args.store)))
        return

    store = scale_store(args.source, args.variants, args.samples, args.seed, args.rebuild)
    info = json.loads((SCALE_DIR / "manifest.json").read_text())
    n = args.repeats
    names = args.only.split(",") if args.only else list(CHILDREN)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CHILDREN}
    for i in range(n):  # interleaved, so every figure sees the same machine load
        for name in names:
            print(f"  round {i + 1}/{n}: {name} ...", flush=True)
            runs[name].append(run_child(name, store, args.samples))

    if args.only:  # investigation: the raw figures of these measurements
        for name in names:
            keys = [k for k, v in runs[name][0].items() if isinstance(v, int | float)]
            print(name, {k: round(median_of(runs[name], k), 4) for k in keys})
        return

    def med(name: str, key: str) -> float:
        return median_of(runs[name], key)

    rows: list[tuple[str, str, str, bool | None]] = []

    def row(label: str, value: str, target: float | None = None, got: float = 0.0) -> None:
        """A table row; with a target, ``got <= target`` decides PASS/FAIL."""
        unit = value.split()[-1] if " " in value else ""
        shown = "" if target is None else f"<= {target:g} {unit}".strip()
        rows.append((label, value, shown, None if target is None else got <= target))

    summary_s, duck_s = med("summary", "seconds"), med("duckdb", "seconds")
    rss = med("summary", "rss_mb")
    row(
        "summary table: Study(...).headline('rougeL'), all items",
        f"{summary_s:.2f} s",
        TARGETS["summary_s"],
        summary_s,
    )
    row("  peak RSS of that process", f"{rss:.0f} MB", TARGETS["summary_rss_mb"], rss)
    row(
        "  RSS after the bare imports (slamkit Study, widgets)",
        f"{med('imports', 'rss_mb'):.0f} MB",
    )
    row("  peak RSS above its own imports", f"{rss - med('summary', 'base_rss_mb'):.0f} MB")
    row("one DuckDB query, same per-variant table", f"{duck_s:.2f} s")
    row("  its peak RSS (duckdb alone)", f"{med('duckdb', 'rss_mb'):.0f} MB")
    row("  ratio summary table / DuckDB query", f"{summary_s / duck_s:.1f} x")
    row("widget: TradeoffExplorer.for_study (cold study)", f"{med('widget', 'build_s'):.2f} s")
    for k in ("utilization", "subset", "variants"):
        v = med("widget", f"redraw_{k}_s")
        row(f"widget redraw after a change of {k}", f"{v:.3f} s", TARGETS["redraw_s"], v)
    plan = runs["plan"][0]
    check_s, plan_s = med("plan", "check_s"), med("plan", "plan_s")
    # the target is the "planning a sweep against that store (which keys exist)";
    # hashing the planned cells' content keys is shown beside it, without a target
    row(
        f"planning: which of {plan['planned']:,} keys exist ({plan['stored']:,} stored)",
        f"{check_s:.2f} s",
        TARGETS["plan_s"],
        check_s,
    )
    row("planning, whole: items, models, content keys, checks", f"{plan_s:.2f} s")
    row("  of which computing the content keys (plan_cells)", f"{med('plan', 'keys_s'):.2f} s")
    row("  of which the checks, one per model", f"{med('plan', 'check_per_model_s'):.2f} s")
    if "rerun_s" in plan:
        row(
            f"cached rerun: run_sweep of {plan['rerun_cells']:,} synthetic cells "
            f"({plan['rerun_calls']} model calls)",
            f"{med('plan', 'rerun_s'):.2f} s",
        )
    size = store.stat().st_size
    print()
    print(f"slamkit at scale: {info['generations']:,} generations, {info['scores']:,} scores; "
          f"store {size / 2**20:,.0f} MiB ({size / info['generations']:,.0f} bytes per "
          f"generation), built in {info['seconds']:.0f} s: {store}")  # fmt: skip
    print(f"machine: {machine()}")
    print(f"each figure: median of {n} fresh processes")
    print()
    w = max(len(r[0]) for r in rows)
    print(f"{'measure':<{w}}  {'value':>10}  {'target':>10}  result")
    print("-" * (w + 32))
    failed = []
    for label, value, target, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "FAIL  <<<")
        if ok is False:
            failed.append(label.strip())
        print(f"{label:<{w}}  {value:>10}  {target:>10}  {verdict}")
    print()
    print("summary table, time by stage (median):")
    for stage in runs["summary"][0]["stages"]:
        vals = [r["stages"][stage] for r in runs["summary"]]
        print(f"  {stage:<52} {statistics.median(vals):6.3f} s")
    same = _compare(runs["summary"][0]["check"], runs["duckdb"][0]["check"])
    print(f"check against the DuckDB query: {same}")
    print()
    if failed:
        print(f"TARGETS MISSED ({len(failed)}): " + "; ".join(failed))
    else:
        print("all targets met")


if __name__ == "__main__":
    main()
