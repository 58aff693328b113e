"""HTML display helpers for notebook cells and the report: tables with visible gaps, and
model outputs shown as text (every string HTML-escaped)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd

#: how missing values are shown in report tables (the DataFrames keep NaN/<NA>)
MISSING = "\u2014"


class Table:
    """A DataFrame shown with missing values as an em dash (display only).

    ``frame`` is the untouched DataFrame (numeric NaN/<NA>, for code and tests); the
    notebook shows the HTML (escaped) or text rendering with ``MISSING`` in the gaps.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def _shown(self) -> pd.DataFrame:
        d = self.frame.copy()
        for c in d.columns:  # pandas prints <NA>/None whatever na_rep says, unless NaN
            col = d[c]
            textual = pd.api.types.is_object_dtype(col.dtype) or isinstance(
                col.dtype, pd.api.extensions.ExtensionDtype
            )
            if textual and col.isna().any():
                d[c] = col.astype(object).where(col.notna(), np.nan)
        return d

    def _repr_html_(self) -> str:
        return self._shown().to_html(na_rep=MISSING, escape=True)

    def __repr__(self) -> str:
        return self._shown().to_string(na_rep=MISSING)


def display_table(df: pd.DataFrame) -> Table:
    """``df`` for a notebook cell, with NaN/<NA>/None/NaT shown as an em dash."""
    return Table(df)


def samples_table(gens: pd.DataFrame, refs: pd.DataFrame, n: int = 3, width: int = 300) -> str:
    """An HTML table of a few outputs beside the reference, every text HTML-escaped.

    ``gens``: ``variant, item_id, text`` (sample 0, e.g.
    :func:`slamkit.store.readers.sample_outputs`); ``refs``: ``item_id, text``.
    """

    def cell(t: Any) -> str:
        s = "" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t)
        s = s if len(s) <= width else s[:width] + " ..."
        return html.escape(s).replace("\n", "<br>")

    items = list(dict.fromkeys(gens["item_id"]))[:n]
    ref_by_item = refs.drop_duplicates("item_id").set_index("item_id")["text"].to_dict()
    variants = sorted(gens["variant"].dropna().unique())
    head = "".join(f"<th>{html.escape(str(v))}</th>" for v in ["item", "reference", *variants])
    body = []
    for it in items:
        g = gens[gens["item_id"] == it]
        if "sample_index" in g:
            g = g[g["sample_index"] == 0]
        g = g.set_index("variant")
        cells = [cell(it), cell(ref_by_item.get(it))] + [
            cell(g["text"].get(v) if v in g.index else None) for v in variants
        ]
        body.append(
            "<tr>"
            + "".join(f"<td style='vertical-align:top;text-align:left'>{c}</td>" for c in cells)
            + "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class HTML:
    """Ready HTML (already escaped where it holds model text) that a notebook cell shows
    as a page fragment; ``str()`` is the HTML itself."""

    def __init__(self, html_text: str) -> None:
        self.html = html_text

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<HTML: {len(self.html)} characters>"
