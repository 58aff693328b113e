"""A study: what the analysis notebooks (04-09) share, in one object.

``Study`` names the generations a notebook looks at (task, variants, first N items,
sampling settings), the reference it compares with, how self-hosting and the API are
priced (an instance and an API row of ``data/prices.csv``) and the equivalence SMART uses.
Everything it shows is read from the store when first asked for and kept: aggregates come
from DuckDB (:mod:`slamkit.store.aggregates`), texts are read only for the sample table.
The store is opened for each read and closed at once (short-lived mode), so a notebook
never holds it while a job writes.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "empty.duckdb"
>>> Study(path, n_items=10).perf.empty
True
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from slamkit import cost, frames, latency, serving, stats
from slamkit.display import HTML, samples_table
from slamkit.gguf import quant_bits
from slamkit.smart.equivalence import EmbeddingSimilarity
from slamkit.smart.select import Selection as SmartSelection
from slamkit.smart.stored import smart_from_store
from slamkit.store import Store, aggregates, readers


class Study:
    """The shared preamble of the analysis notebooks.

    Parameters mirror the notebooks' ``parameters`` cell: ``store_path``, ``task_id``,
    ``models`` (variant names; empty = all), ``n_items`` (first N items), ``temperature``
    and ``max_tokens`` (only generations made with these), ``reference_model`` (the
    references' ``source_model``), ``reference_name`` (its label), ``api_price`` (the row
    of the price table that prices the reference API), ``instance`` and ``hourly_usd``
    (None: the instance's price-table row), ``utilization``, ``requests_per_month``,
    ``conformity_metric``/``conformity_tau`` (SMART's equivalence: an output conforms when
    its stored metric is at least tau), ``timings`` (``"isolated"``: latencies, rates and
    the self-hosted cost from requests timed with no other in flight — the default, see
    :func:`timings_note`; ``"all"``: requests timed under load too).
    """

    def __init__(
        self,
        store_path: str | Path,
        task_id: str = "alpaca_eval",
        models: list[str] | tuple[str, ...] = (),
        n_items: int | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reference_model: str = "gpt4_1106_preview",
        reference_name: str = "GPT-4",
        api_price: str = "gpt-4",
        instance: str = "aws-c7i.large",
        hourly_usd: float | None = None,
        utilization: float = 0.5,
        requests_per_month: float = 100_000,
        conformity_metric: str = "rougeL",
        conformity_tau: float = 0.3,
        timings: str = "isolated",
    ) -> None:
        self.store_path = str(store_path)
        self.selection = readers.Selection(
            task_id, tuple(models or ()), n_items, temperature, max_tokens, timings
        )
        self.task_id, self.n_items = task_id, n_items
        self.reference_model, self.reference_name = reference_model, reference_name
        self.api_price, self.instance = api_price, instance
        self.utilization = cost.check_utilization(utilization, "Study(utilization=)")
        self.requests_per_month = requests_per_month
        self.hourly_usd = float(
            cost.instance_hourly(instance) if hourly_usd is None else hourly_usd
        )
        self.conformity_metric, self.conformity_tau = conformity_metric, conformity_tau
        self.store = Store(self.store_path, short_lived=True)
        self._quality: dict[tuple[str, tuple[str, ...] | None], pd.DataFrame] = {}
        # compiled once (fails early on unknown variant names, naming the stored ones)
        self.scope: readers.Scope = readers.scope(self.store, self.selection)

    # -- what is read (once) ---------------------------------------------------------
    @cached_property
    def perf(self) -> pd.DataFrame:
        """Per variant: count, latency percentiles, TTFT, decode/prefill rates, tokens,
        truncated share, bits per weight (one DuckDB query)."""
        p = aggregates.variant_summary(self.store, self.scope)
        p = p.assign(bits=[quant_bits(q) for q in p["quant"]])
        return cost.hosting_throughput(p, self.capacity)

    @cached_property
    def capacity(self) -> pd.DataFrame:
        """Per model, the capacity at the latency target of its newest load test
        (:func:`slamkit.serving.capacity_frame`); the cost model prices self-hosting from
        it where there is one (``perf.throughput_basis`` says which)."""
        sel = self.selection
        return serving.capacity_frame(self.store, self.task_id, sel.temperature, sel.max_tokens)

    @cached_property
    def load_ids(self) -> list[str]:
        """The newest finished load test of each variant of the study with the study's
        sampling (newest first; the one that prices it, see :attr:`capacity`)."""
        cap = self.capacity
        variants = set(aggregates.variant_summary(self.store, self.scope)["variant"])
        runs = readers.load_runs(self.store, self.task_id)
        order = {i: k for k, i in enumerate(runs["load_id"])}
        ids = [i for m, i in zip(cap["model"], cap["load_id"], strict=True) if m in variants]
        return sorted(ids, key=lambda i: order.get(i, 0))

    def pricing_note(self) -> str:
        """Which throughput prices each variant, in words — and a warning when the
        variants are priced in different ways (not comparable)."""
        p = self.perf
        if p.empty:
            return "No variants."
        by_load = [v for v, b in zip(p["variant"], p["throughput_basis"], strict=True)
                   if cost.is_capacity_basis(b)]  # fmt: skip
        missed = [v for v, b in zip(p["variant"], p["throughput_basis"], strict=True)
                  if "NOT at the latency target" in str(b)]  # fmt: skip
        alone = [v for v in p["variant"] if v not in by_load and v not in missed]
        parts = []
        if by_load:
            parts.append("from the capacity at the latency target of a load test: "
                         + ", ".join(by_load))  # fmt: skip
        if missed:
            parts.append("one request at a time although its load test met the target at "
                         "no load: " + ", ".join(missed))  # fmt: skip
        if alone:
            parts.append("one request at a time (no load test with the study's settings): "
                         + ", ".join(alone))  # fmt: skip
        note = "Self-hosting priced " + "; ".join(parts) + "."
        if by_load and (alone or missed):
            note += (
                " Variants priced in different ways are not comparable: load-test each "
                "(slamkit load --model NAME, same sampling) for a like-for-like cost."
            )
        return note

    def load_table(self) -> pd.DataFrame:
        """The knee table (one row per load point) of the newest load test in the store
        (:func:`slamkit.serving.load_table`; empty, with the load-table columns, when
        there is none)."""
        return serving.load_table(self.store, self.load_ids[0] if self.load_ids else None)

    def load_report(self) -> str:
        """The knee tables and capacities of each model's newest load test, as text (what
        ``slamkit load`` prints)."""
        if not self.load_ids:
            return "No load test in the store: `slamkit load` (or 05_performance) runs one."
        return "\n\n".join(serving.load_report(self.store, i) for i in self.load_ids)

    def load_latencies(self) -> pd.DataFrame:
        """Per request of the newest load test, and the reference API's captured requests
        beside them (:func:`slamkit.serving.latency_by_source`)."""
        return serving.latency_by_source(self.store, self.load_ids[:1], self.refs)

    @cached_property
    def scores(self) -> pd.DataFrame:
        """Per (variant, item, metric) the mean over samples — the input of every CI."""
        return aggregates.item_means(self.store, self.scope)

    @cached_property
    def subsets(self) -> pd.DataFrame:
        """``item_id, position, subset`` of the first ``n_items`` items."""
        return readers.item_subsets(self.store, self.task_id, n_items=self.n_items)

    @cached_property
    def refs(self) -> pd.DataFrame:
        """The reference outputs of the selected items (with texts: they are few)."""
        return readers.references(
            self.store, self.task_id, self.reference_model, n_items=self.n_items
        )

    @cached_property
    def runs(self) -> pd.DataFrame:
        return readers.runs(self.store)

    @property
    def metrics(self) -> list[str]:
        """The metrics stored for the selected generations."""
        return sorted(self.scores["metric"].unique()) if len(self.scores) else []

    # -- prices -------------------------------------------------------------------------
    @cached_property
    def reference(self) -> dict[str, Any]:
        """The reference API as a point (cost from its token usage and ``api_price``)."""
        return cost.reference_point(self.refs, self.api_price, name=self.reference_name)

    @cached_property
    def unit_costs(self) -> dict[str, float]:
        """USD per request: each variant (self-hosted) and the reference model (API)."""
        p = self.perf
        own = {
            v: cost.self_hosted_usd_per_request(self.hourly_usd, t, self.utilization, rph)
            for v, t, rph in zip(
                p["variant"], p["mean_latency_s"], p["requests_per_hour"], strict=True
            )
        }
        return own | {self.reference_model: self.reference["usd_per_request"]}

    @property
    def equivalence(self) -> EmbeddingSimilarity:
        """SMART's equivalence: the stored ``conformity_metric`` at least ``conformity_tau``."""
        return EmbeddingSimilarity(tau=self.conformity_tau, column=self.conformity_metric)

    # -- frames ---------------------------------------------------------------------------
    def quality(self, metric: str, items: list[str] | None = None) -> pd.DataFrame:
        """Mean ``metric`` per variant with its bootstrap CI (``frames.quality_summary``;
        seeded, so computed once per metric and item set and kept)."""
        key = (metric, tuple(items) if items is not None else None)
        if key not in self._quality:
            self._quality[key] = frames.quality_summary(self.scores, metric, items=items)
        return self._quality[key].copy()

    def metric_means(self) -> pd.DataFrame:
        """variant x metric table of means over items."""
        return self.scores.pivot_table(
            index="variant", columns="metric", values="value", aggfunc="mean"
        ).round(3)

    def verdicts(self, metric: str, judge_model: str | None = None) -> tuple[pd.DataFrame, str]:
        """Pairwise verdicts for Bradley-Terry: the LLM judge's when stored, else per-item
        ``metric``; returns ``(verdicts, source)`` (``source`` names where they came from)."""
        if judge_model:
            v = stats.verdicts_from_store(
                self.store, "judge", self.task_id, judge_model=judge_model
            )
            if len(v):
                return v, f"judge {judge_model}"
        return frames.verdicts_from_scores(self.scores, metric), (
            f"per-item {metric} (no judge verdicts)"
        )

    def ratings(
        self, metric: str, judge_model: str | None = None, n_boot: int = 200
    ) -> tuple[pd.DataFrame, str]:
        """Bradley-Terry ratings with bootstrap CIs (``charts.bt_ratings`` input) and the
        verdicts' source; no rows when fewer than two models have verdicts."""
        v, source = self.verdicts(metric, judge_model)
        if len(set(v["model_a"]) | set(v["model_b"])) < 2:
            return pd.DataFrame(columns=["model", "rating", "lo", "hi"]), source
        return frames.bt_frame(stats.bradley_terry(v, n_boot=n_boot)), source

    def tradeoffs(self, metric: str) -> pd.DataFrame:
        """Quality, latency and cost per variant: the Pareto and ladder charts' input."""
        return frames.tradeoff_frame(
            self.perf, self.quality(metric), self.hourly_usd, self.utilization
        )

    def headline(self, metric: str) -> pd.DataFrame:
        """The one-table summary (quality CI, latency, speed, cost) per variant + the API."""
        return frames.headline(
            self.perf, self.quality(metric), self.reference, self.hourly_usd,
            self.utilization, metric,
        )  # fmt: skip

    def matrix(
        self,
        metric: str,
        drift_n_ctx: int = 128,
        drift_chunks: int | None = 4,
        speed_pp: int = 64,
        speed_tg: int = 32,
        speed_threads: int | None = None,
    ) -> pd.DataFrame:
        """The variant matrix (``frames.variant_matrix``): per variant of the study, the
        catalog facts, ``metric`` vs the reference with its CI, drift vs the parent, raw
        speed, p95 latency, memory and reproducibility (``slamkit drift / speed / repro``).

        Only measurements made with these settings are shown (the defaults are those of
        notebook 07 and the CLI): drift on the study's text set (the task's first
        ``n_items`` references from ``reference_model``) in windows of ``drift_n_ctx``
        tokens, ``drift_chunks`` of them; speed with ``speed_pp`` / ``speed_tg`` tokens
        (and ``speed_threads`` threads; None: any)."""
        from slamkit.errors import MatrixError
        from slamkit.matrix.drift import reference_text_set

        try:
            text = reference_text_set(self.store, self.task_id, self.reference_model, self.n_items)
            sha: str | None = text.sha256
        except MatrixError:  # no references: no drift row can match
            sha = "no reference texts"
        return frames.variant_matrix(
            readers.matrix_model_facts(self.store), self.quality(metric), self.perf,
            readers.drift_results(self.store), readers.speed_results(self.store),
            readers.repro_results(self.store), metric, variants=list(self.perf["variant"]),
            drift_n_ctx=drift_n_ctx, drift_chunks=drift_chunks, drift_text_sha256=sha,
            speed_pp=speed_pp, speed_tg=speed_tg, speed_threads=speed_threads,
        )  # fmt: skip

    def repro_note(self) -> str:
        """One line on determinism; a WARNING when a greedy cell did not reproduce."""
        repro = readers.repro_results(self.store)
        names = set(self.perf["variant"])
        return frames.repro_note(repro[repro["variant"].isin(names)] if len(repro) else repro)

    @property
    def timed_refs(self) -> pd.DataFrame:
        """The references whose latencies count under ``timings`` (isolated: captured
        with no other request in flight; imported ones count as alone)."""
        if self.selection.timings == "all" or self.refs.empty:
            return self.refs
        return self.refs[self.refs["in_flight"].fillna(1) <= 1]

    def latencies(self) -> pd.DataFrame:
        """Per-request ``variant, latency_s, ttft_s, is_reference`` incl. the reference API."""
        own = aggregates.latency_values(self.store, self.scope)
        return frames.latency_frame(own.assign(error=None), self.timed_refs, self.reference_name)

    def latency_inputs(self) -> pd.DataFrame:
        """Per-request latency rows of the variants and the reference API
        (``variant, source, latency_s, ttft_s, decode_tps``) for
        :func:`slamkit.latency.latency_summary`."""
        own = aggregates.latency_values(self.store, self.scope).assign(source="self-hosted")
        ref = self.timed_refs.dropna(subset=["latency_s", "ttft_s"], how="all")
        ref = ref.assign(variant=ref["source_model"], source="reference API")
        cols = ["variant", "source", "latency_s", "ttft_s"]
        return pd.concat([own[[*cols, "decode_tps"]], ref[cols]], ignore_index=True)

    def latency_table(self) -> pd.DataFrame:
        """p50/p90/p95/p99, CV and tail ratio with bootstrap CIs, per variant and the API."""
        summary = latency.latency_summary(self.latency_inputs(), by="variant")
        return latency.wide(summary, by="variant").round(3)

    def cost_components(self) -> pd.DataFrame:
        return cost.cost_components(self.perf, self.reference, self.hourly_usd, self.utilization)

    def break_even(self) -> pd.DataFrame:
        return cost.break_even_frame(self.perf, self.reference, self.hourly_usd, self.utilization)

    def cost_table(self) -> pd.DataFrame:
        """:func:`slamkit.cost.cost_table` for every variant and the reference API."""
        usage = cost.usage_from_summary(self.perf, self.reference, self.hourly_usd)
        return cost.cost_table(
            usage, reference=str(self.reference["price_name"]), instance=self.instance,
            utilization=self.utilization, monthly_requests=self.requests_per_month,
        )  # fmt: skip

    def conformity(self) -> pd.DataFrame:
        """``variant, item_id, conform`` of sample 0 under the study's equivalence."""
        return aggregates.conformity(
            self.store, self.scope, self.conformity_metric, self.conformity_tau
        )

    def conformity_counts(self) -> pd.DataFrame:
        return self.conformity().groupby("variant")["conform"].agg(["sum", "count", "mean"])

    def samples(self, n: int = 3) -> HTML:
        """An HTML table of a few outputs beside the reference (texts read only here)."""
        gens = readers.sample_outputs(self.store, self.scope, n)
        return HTML(samples_table(gens, self.refs, n=n))

    def provenance(self) -> pd.DataFrame:
        return frames.provenance(self.runs)

    def select(self, delta: float, gamma: float = 0.95, method: str = "anytime") -> SmartSelection:
        """SMART on the stored generations at this study's unit costs; saved in
        ``selections``."""
        return smart_from_store(
            self.store, self.task_id, self.reference_model, self.equivalence, delta, gamma,
            cost_per_item=self.unit_costs, method=method,
            models=list(self.selection.models) or None,
        )  # fmt: skip

    def parameters(self, **more: Any) -> dict[str, Any]:
        """What this study was computed with (printed at the end of the report)."""
        return {
            "task": self.task_id, "items": self.n_items,
            "models": list(self.selection.models) or "all",
            "temperature": self.selection.temperature, "max_tokens": self.selection.max_tokens,
            "hourly_usd": self.hourly_usd, "utilization": self.utilization,
            "requests_per_month": self.requests_per_month, "instance": self.instance,
            "timings": self.selection.timings,
            **more,
            "conformity": f"{self.conformity_metric} >= {self.conformity_tau}",
        }  # fmt: skip

    def timings_note(self) -> str:
        """Which requests the latencies, rates and self-hosted costs come from, in words
        (every table of them says it)."""
        counts = aggregates.timing_counts(self.store, self.scope)
        total = int(counts["n"].sum()) if len(counts) else 0
        alone = int(counts.loc[counts["in_flight"] == 1, "n"].sum()) if len(counts) else 0
        loaded = total - alone
        timed = self.refs.dropna(subset=["latency_s"]) if len(self.refs) else self.refs
        ref_loaded = int((timed["in_flight"].fillna(1) > 1).sum()) if len(timed) else 0
        refs = ""
        if ref_loaded:
            refs = (
                f" Reference API: {ref_loaded} of {len(timed)} timed references were captured "
                "under load" + (" and are left out." if self.selection.timings != "all" else ".")
            )
        if self.selection.timings == "all":
            return (
                f"Timings: all {total} requests, {loaded} of them timed under load (other "
                "requests in flight) — latencies and costs mix isolated and loaded "
                f"requests, and a loaded request's latency is priced as if it ran alone.{refs}"
            )
        if total and not alone:
            return (
                f"Timings: none of the {total} requests was measured in isolation (all ran "
                "with other requests in flight), so latencies, speeds and self-hosted costs "
                "are left blank — rerun the sweep with the sequential executor, or pass "
                f"timings='all' to show the timings under load.{refs}"
            )
        left_out = ""
        if loaded:
            left_out = (
                f"; {loaded} timed under load (other requests in flight) are left out of the "
                "timings (timings='all' shows them)"
            )
        return (
            f"Timings: {alone} of {total} requests, each measured in isolation (one "
            f"request in flight){left_out}.{refs}"
        )

    def __repr__(self) -> str:
        p = self.perf
        return (
            f"<Study of {self.store_path}: task {self.task_id!r}, {len(p)} variants, "
            f"{int(p['n'].sum()) if len(p) else 0} generations, {len(self.refs)} references "
            f"({self.reference_model}), {len(self.scores)} item scores>\n{self.timings_note()}"
        )
