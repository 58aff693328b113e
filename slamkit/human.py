"""Blind human A/B evaluation in a notebook, and agreement statistics.

:class:`ABWidget` shows one item at a time: the request and two answers whose sides are
randomized per item (seeded; which answer was on the left is stored). Annotators click
Left / Right / Tie (or type ``a``, ``b`` or ``t`` + Enter in the key box), optionally
pick a side per criterion and write a reason. Every click appends rows to
``human_judgments`` (never updates one); the widget resumes after the annotator's last
judged pair.

Agreement: :func:`cohen_kappa` (two raters), :func:`fleiss_kappa` (many raters),
:func:`annotator_agreement` and :func:`judge_human_agreement` (SLaM used GPT-4 as judge
and never checked it against people).
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from slamkit.errors import SlamkitError
from slamkit.keys import content_key
from slamkit.store import readers

if TYPE_CHECKING:
    from slamkit.store import Store

CHOICES = ("left", "right", "tie")
KEYS = {"a": "left", "b": "right", "t": "tie"}


# -- the queue ------------------------------------------------------------------
def build_ab_queue(
    store: Store,
    pairs: pd.DataFrame | None = None,
    seed: int = 0,
    **pair_kwargs: Any,
) -> pd.DataFrame:
    """Pairs with a seeded random side assignment (stored with each judgment).

    ``pairs`` (columns task_id, item_id, a_kind, a_id, b_kind, b_id) defaults to every
    generation vs its reference (``slamkit.judge.build_pairs(store, **pair_kwargs)``).
    Returns task_id, item_id, left_kind, left_id, right_kind, right_id, in pair order.
    """
    if pairs is None:
        from slamkit.judge.run import build_pairs

        pairs = build_pairs(store, **pair_kwargs)
    rows = []
    for p in pairs.itertuples(index=False):
        a, b = (p.a_kind, p.a_id), (p.b_kind, p.b_id)
        flip = int(content_key("ab-side", seed=seed, a=list(a), b=list(b))[-1], 16) % 2 == 1
        left, right = (b, a) if flip else (a, b)
        rows.append(
            {"task_id": p.task_id, "item_id": p.item_id, "left_kind": left[0],
             "left_id": left[1], "right_kind": right[0], "right_id": right[1]}
        )  # fmt: skip
    cols = ["task_id", "item_id", "left_kind", "left_id", "right_kind", "right_id"]
    return pd.DataFrame(rows, columns=cols)


def _done_pairs(store: Store, annotator: str) -> set[frozenset]:
    return readers.annotated_pairs(store, annotator)


def _text(store: Store, kind: str, key: str) -> str:
    if kind not in ("generation", "reference", "text"):
        return f"({kind} {key})"
    text = readers.texts(store, kind, [key]).get(key)
    return text if text is not None else f"(missing {kind} {key})"


def record_choice(
    store: Store,
    annotator: str,
    pair: dict[str, Any],
    choice: str,
    criteria: dict[str, str] | None = None,
    reason: str | None = None,
    source: str = "widget",
) -> int:
    """Append one overall judgment (+ one per criterion) for ``pair``; return rows written."""
    annotator = (annotator or "").strip()
    if not annotator:
        raise SlamkitError("Enter an annotator name before judging (the 'Annotator' box).")
    choices = {"overall": choice, **{k: v for k, v in (criteria or {}).items() if v}}
    for crit, ch in choices.items():
        if ch not in CHOICES:
            raise SlamkitError(f"Choice {ch!r} for {crit!r} must be one of {CHOICES}.")
    rows = [
        {"annotator": annotator, "task_id": pair["task_id"], "item_id": pair["item_id"],
         "left_kind": pair["left_kind"], "left_id": pair["left_id"],
         "right_kind": pair["right_kind"], "right_id": pair["right_id"],
         "criterion": crit, "choice": ch, "reason": reason or None, "source": source}
        for crit, ch in choices.items()
    ]  # fmt: skip
    return store.insert_many("human_judgments", rows)


# -- the widget -----------------------------------------------------------------
class ABWidget:
    """A blind A/B annotation widget over ``queue`` (see :func:`build_ab_queue`).

    >>> w = ABWidget(store, build_ab_queue(store), annotator="ana")  # doctest: +SKIP
    >>> w  # displays; or drive it: w.left_button.click()  # doctest: +SKIP
    """

    def __init__(
        self,
        store: Store,
        queue: pd.DataFrame,
        annotator: str = "",
        criteria: Sequence[str] = (),
        show_prompt: bool = True,
    ) -> None:
        from slamkit.errors import require

        w: Any = require("ipywidgets")
        self.store, self.queue = store, queue.reset_index(drop=True)
        self.criteria, self.show_prompt = list(criteria), show_prompt
        self.position: int | None = None
        self.annotator = w.Text(
            value=annotator, description="Annotator", placeholder="your name",
            tooltip="Judgments are stored under this name; you resume where you left off",
        )  # fmt: skip
        self.progress = w.HTML()
        self.prompt_html = w.HTML()
        self.left_html, self.right_html = w.HTML(), w.HTML()
        lay = w.Layout(width="50%", border="1px solid #ccc", padding="4px")
        self.left_box = w.VBox([w.HTML("<b>Left</b>"), self.left_html], layout=lay)
        self.right_box = w.VBox([w.HTML("<b>Right</b>"), self.right_html], layout=lay)
        self.left_button = w.Button(
            description="Left is better", tooltip="Left is better (key: a)", icon="arrow-left"
        )
        self.tie_button = w.Button(description="About the same", tooltip="Tie (key: t)")
        self.right_button = w.Button(
            description="Right is better", tooltip="Right is better (key: b)", icon="arrow-right"
        )
        for btn, choice in (
            (self.left_button, "left"),
            (self.right_button, "right"),
            (self.tie_button, "tie"),
        ):
            btn.on_click(lambda _b, c=choice: self.choose(c))
        self.criterion_toggles = {
            c: w.ToggleButtons(
                options=[("-", ""), ("Left", "left"), ("Same", "tie"), ("Right", "right")],
                value="", description=c, tooltips=["no opinion", "left", "same", "right"],
            )
            for c in self.criteria
        }  # fmt: skip
        self.reason = w.Textarea(placeholder="Why? (optional)", description="Reason")
        self.key_box = w.Text(
            description="Key", placeholder="a / b / t, then Enter",
            tooltip="Keyboard: type a (left), b (right) or t (tie) and press Enter",
        )  # fmt: skip
        self.key_box.continuous_update = False  # fires on Enter (or leaving the box)
        self.key_box.observe(lambda c: c["new"] and self.key(c["new"]), names="value")
        self.status = w.HTML()
        self.annotator.observe(lambda _c: self.refresh(), names="value")
        self.widget = w.VBox(
            [
                self.annotator, self.progress, self.prompt_html,
                w.HBox([self.left_box, self.right_box]),
                *self.criterion_toggles.values(), self.reason,
                w.HBox([self.left_button, self.tie_button, self.right_button, self.key_box]),
                self.status,
            ]
        )  # fmt: skip
        self.refresh()

    @classmethod
    def for_store(
        cls,
        store_path: str,
        task_id: str | None = None,
        source_model: str | None = None,
        annotator: str = "",
        **kw: Any,
    ) -> ABWidget:
        """Every generation of ``task_id`` vs its ``source_model`` reference, over a
        short-lived store: the file is opened for each click and closed at once, so other
        notebooks and ``slamkit`` commands can write while the widget is open."""
        from slamkit.store import Store

        store = Store(store_path, short_lived=True)
        queue = build_ab_queue(store, task_id=task_id, source_model=source_model)
        return cls(store, queue, annotator=annotator, **kw)

    def _ipython_display_(self) -> None:  # pragma: no cover - needs a frontend
        from IPython.display import display

        display(self.widget)

    # -- state ---------------------------------------------------------------
    def remaining(self) -> list[int]:
        """Queue positions the current annotator has not judged yet."""
        name = self.annotator.value.strip()
        done = _done_pairs(self.store, name) if name else set()
        return [
            i
            for i, p in enumerate(self.queue.itertuples(index=False))
            if frozenset([(p.left_kind, p.left_id), (p.right_kind, p.right_id)]) not in done
        ]

    def refresh(self) -> None:
        """Move to the first pair the annotator has not judged and render it."""
        todo = self.remaining()
        self.position = todo[0] if todo else None
        n, left = len(self.queue), len(todo)
        self.progress.value = f"<b>{n - left} / {n}</b> judged"
        buttons = (self.left_button, self.right_button, self.tie_button)
        if self.position is None:
            self.prompt_html.value = "<b>All pairs judged. Thank you!</b>"
            self.left_html.value = self.right_html.value = ""
            for b in buttons:
                b.disabled = True
            return
        for b in buttons:
            b.disabled = False
        p = self.queue.iloc[self.position]
        prompt = ""
        if self.show_prompt:
            prompt = readers.item_prompt(self.store, p.task_id, p.item_id)
        pre = '<pre style="white-space: pre-wrap; font-family: inherit">{}</pre>'
        self.prompt_html.value = "<b>Request</b>" + pre.format(html.escape(prompt))
        self.left_html.value = pre.format(html.escape(_text(self.store, p.left_kind, p.left_id)))
        self.right_html.value = pre.format(html.escape(_text(self.store, p.right_kind, p.right_id)))

    # -- actions ---------------------------------------------------------------
    def choose(self, choice: str) -> bool:
        """Record ``choice`` ('left' | 'right' | 'tie') for the shown pair; advance."""
        if self.position is None:
            self.status.value = "Nothing left to judge."
            return False
        crits = {c: t.value for c, t in self.criterion_toggles.items() if t.value}
        try:
            record_choice(
                self.store, self.annotator.value, self.queue.iloc[self.position].to_dict(),
                choice, crits, self.reason.value.strip() or None,
            )  # fmt: skip
        except SlamkitError as exc:
            self.status.value = f'<span style="color: #b00">{html.escape(str(exc))}</span>'
            return False
        self.status.value = f"Saved: {choice}."
        self.reason.value = ""
        for t in self.criterion_toggles.values():
            t.value = ""
        self.refresh()
        return True

    def key(self, value: str) -> bool:
        """Handle a key-box entry: 'a' left, 'b' right, 't' tie."""
        if self.key_box.value:
            self.key_box.value = ""
        choice = KEYS.get(value.strip().lower()[:1])
        if choice is None:
            self.status.value = "Type a (left), b (right) or t (tie), then Enter."
            return False
        return self.choose(choice)


# -- outcomes and agreement -------------------------------------------------------
def human_outcomes(human: pd.DataFrame) -> pd.DataFrame:
    """Human choices in side-free form: which of (candidate, other) won.

    The candidate is the generation when one side is a generation and the other is not,
    else the side whose (kind, id) sorts first. ``outcome``: 'candidate', 'other', 'tie'.
    """
    cols = ["annotator", "task_id", "item_id", "criterion", "candidate_kind", "candidate_id",
            "other_kind", "other_id", "outcome"]  # fmt: skip
    if human.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for h in human.itertuples(index=False):
        left, right = (h.left_kind, h.left_id), (h.right_kind, h.right_id)
        if right[0] == "generation" and left[0] != "generation":
            cand_left = False
        elif left[0] == "generation" and right[0] != "generation":
            cand_left = True
        else:
            cand_left = left <= right
        cand, other = (left, right) if cand_left else (right, left)
        if h.choice == "tie":
            outcome = "tie"
        else:
            outcome = "candidate" if (h.choice == "left") == cand_left else "other"
        rows.append([h.annotator, h.task_id, h.item_id, h.criterion, *cand, *other, outcome])
    return pd.DataFrame(rows, columns=cols)


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """Cohen's kappa of two raters' labels on the same items (NaN when undefined);
    ``statsmodels.stats.inter_rater.cohens_kappa`` of their contingency table.

    >>> round(cohen_kappa(["x", "y", "x"], ["x", "y", "y"]), 6)
    0.4
    """
    if len(a) != len(b):
        raise SlamkitError(f"cohen_kappa needs equal-length label lists ({len(a)} vs {len(b)}).")
    labels = sorted(set(a) | set(b), key=str)
    if len(labels) < 2:  # no items, or one label for all: chance agreement is 1
        return float("nan")
    pos = {c: k for k, c in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    np.add.at(table, ([pos[x] for x in a], [pos[y] for y in b]), 1)
    from statsmodels.stats import inter_rater

    return float(inter_rater.cohens_kappa(table, return_results=False))


def fleiss_kappa(counts: Any) -> float:
    """Fleiss' kappa from an items x categories matrix of rating counts
    (``statsmodels.stats.inter_rater.fleiss_kappa``).

    Every row must sum to the same number of raters (at least 2).
    """
    m = np.asarray(counts, dtype=float)
    if m.ndim != 2 or m.shape[0] == 0:
        return float("nan")
    n_raters = m.sum(axis=1)
    if not np.all(n_raters == n_raters[0]) or n_raters[0] < 2:
        raise SlamkitError(
            "fleiss_kappa needs the same number (>= 2) of ratings for every item; "
            f"got row sums {sorted(set(n_raters.tolist()))}."
        )
    if np.count_nonzero(m.sum(axis=0)) < 2:  # every rating in one category: chance agreement 1
        return float("nan")
    from statsmodels.stats import inter_rater

    return float(inter_rater.fleiss_kappa(m, method="fleiss"))


_PAIR = ["candidate_kind", "candidate_id", "other_kind", "other_id", "criterion"]


def annotator_agreement(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa for every annotator pair on their shared pairs, and Fleiss' kappa
    over the pairs rated by all annotators (row ``rater_a='all'``). Pure."""
    cols = ["criterion", "rater_a", "rater_b", "n", "agreement", "kappa", "statistic"]
    rows = []
    last = outcomes.drop_duplicates([*_PAIR, "annotator"], keep="last")
    for crit, g in last.groupby("criterion"):
        wide = g.pivot(index=_PAIR[:-1], columns="annotator", values="outcome")
        for r1, r2 in itertools.combinations(sorted(wide.columns), 2):
            both = wide[[r1, r2]].dropna()
            if both.empty:
                continue
            rows.append(
                [crit, r1, r2, len(both), float((both[r1] == both[r2]).mean()),
                 cohen_kappa(list(both[r1]), list(both[r2])), "cohen"]
            )  # fmt: skip
        full = wide.dropna()
        if wide.shape[1] >= 2 and not full.empty:
            cats = ["candidate", "other", "tie"]
            counts = np.stack([(full == c).sum(axis=1).to_numpy() for c in cats], axis=1)
            rows.append([crit, "all", f"{wide.shape[1]} raters", len(full),
                         float(full.nunique(axis=1).eq(1).mean()), fleiss_kappa(counts),
                         "fleiss"])  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def judge_human_agreement(judge: pd.DataFrame, human: pd.DataFrame) -> pd.DataFrame:
    """Cohen's kappa between a judge's order-robust outcomes and humans (pure).

    ``judge``: :func:`slamkit.judge.pairwise_outcomes`; ``human``: :func:`human_outcomes`.
    One row per judge, criterion and annotator, plus annotator 'majority' (the most
    frequent human outcome per pair; no strict majority counts as 'tie').
    """
    cols = ["judge_model", "criterion", "annotator", "n", "agreement", "kappa"]
    j = judge.dropna(subset=["outcome"])
    if j.empty or human.empty:
        return pd.DataFrame(columns=cols)
    h = human.drop_duplicates([*_PAIR, "annotator"], keep="last")

    def majority(s: pd.Series) -> str:
        vc = s.value_counts()
        return str(vc.index[0]) if len(vc) == 1 or vc.iloc[0] > vc.iloc[1] else "tie"

    maj = h.groupby(_PAIR)["outcome"].agg(majority).reset_index().assign(annotator="majority")
    h = pd.concat([h[[*_PAIR, "annotator", "outcome"]], maj], ignore_index=True)
    merged = j.merge(h, on=_PAIR, suffixes=("_judge", "_human"))
    rows = []
    for (jm, crit, ann), g in merged.groupby(["judge_model", "criterion", "annotator"]):
        a, b = list(g["outcome_judge"]), list(g["outcome_human"])
        rows.append(
            [jm, crit, ann, len(g), float(np.mean([x == y for x, y in zip(a, b, strict=True)])),
             cohen_kappa(a, b)]
        )  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def load_human_judgments(store: Store, annotator: str | None = None) -> pd.DataFrame:
    """All human judgment rows (optionally one annotator's), in the order they were made."""
    return readers.human_judgments(store, annotator)
