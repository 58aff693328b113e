"""Judge calibration on human labels (slamkit.calibration): PPI coverage by simulation,
hand-computed PPI / agreement, and calibrate_judge on an imported file against a scripted
OpenAI-compatible endpoint (the real llama_cpp.server path is in test_judge_server.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import FakeServer
from scipy import stats as sps

from slamkit.calibration import (
    agreement_ci,
    calibrate_judge,
    calibration_report,
    human_pairs,
    ppi_mean,
    simulate_ppi,
    wilson_mean_interval,
    win_rate_table,
)
from slamkit.cli import build_parser, main
from slamkit.human import cohen_kappa, human_outcomes
from slamkit.judge import JudgeConfig
from slamkit.preferences import import_preferences
from slamkit.store import Store, readers

A = 'ok:{"reasoning": "A is better", "verdict": "A"}'
B = 'ok:{"reasoning": "B is better", "verdict": "B"}'


# -- prediction-powered inference ------------------------------------------------------------
def _tolerance(n_sims: int, conf: float = 0.95) -> float:
    """Three binomial standard errors of a coverage estimate at the nominal level."""
    return 3 * math.sqrt(conf * (1 - conf) / n_sims)


@pytest.mark.parametrize(
    ("n", "accuracy", "bias"),
    [(50, 0.7, 0.3), (20, 0.7, 0.3), (50, 0.95, 0.3), (20, 0.9, 0.0), (50, 0.3, 0.0),
     (200, 0.7, 0.3)],
)  # fmt: skip
def test_ppi_interval_covers_the_true_win_rate_in_simulation(n, accuracy, bias) -> None:
    """2000 simulated studies per setting; N = 1000 judge-only pairs."""
    sims = 2000
    df = simulate_ppi(n_sims=sims, n=n, big_n=1000, judge_accuracy=accuracy, judge_bias=bias,
                      seed=n)  # fmt: skip
    got = df.set_index("method")
    assert got.loc["ppi", "coverage"] >= 0.95 - _tolerance(sims), got
    assert got.loc["human only", "coverage"] >= 0.95 - _tolerance(sims), got
    if bias > 0:  # the judge alone is biased: its narrow interval misses the truth
        assert got.loc["judge only", "coverage"] < 0.5
    if accuracy >= 0.9:  # a good judge makes the corrected interval much narrower
        assert got.loc["ppi", "mean_width"] < 0.9 * got.loc["human only", "mean_width"]
    if accuracy <= 0.3:  # a poor one widens it; power tuning gives most of that back
        assert got.loc["ppi++", "mean_width"] < got.loc["ppi", "mean_width"]
    if n >= 200:  # power tuning's own-sample lambda is harmless at large n
        assert got.loc["ppi++", "coverage"] >= 0.95 - _tolerance(sims), got
    assert df.attrs["truth"] == pytest.approx(0.55 + 0.15 / 2)


@pytest.mark.parametrize(
    ("p_win", "p_tie", "n"),
    [(0.95, 0.03, 10), (0.95, 0.03, 30), (0.02, 0.02, 10), (0.02, 0.02, 30)],
)
def test_human_only_interval_keeps_its_coverage_near_0_and_1(p_win, p_tie, n) -> None:
    """True win rate 0.965 or 0.03: the humans-only interval (Wilson) still covers; the old
    t-interval mean +- t sd / sqrt(n) collapsed when all labels agreed (0.33-0.79 here)."""
    sims = 2000
    df = simulate_ppi(n_sims=sims, n=n, big_n=200, p_win=p_win, p_tie=p_tie, seed=n)
    got = df.set_index("method").loc["human only"]
    two_se = 2 * math.sqrt(0.95 * 0.05 / sims)  # binomial s.e. at the nominal level
    assert got["coverage"] >= 0.95 - two_se, got
    assert 0 < got["mean_width"] < 0.5


def test_wilson_mean_interval_solves_the_score_equation() -> None:
    t = sps.t.ppf(0.975, 9)
    for y in ([1] * 10, [0] * 10, [1, 0, 0.5, 1, 1, 0.5, 0, 1, 1, 1]):
        lo, hi = wilson_mean_interval(y)
        m = float(np.mean(y))
        assert 0 <= lo < m or lo == m == 0
        assert m < hi <= 1 or hi == m == 1
        for b in (lo, hi):  # (mean - b)^2 = t^2 b (1 - b) / n, unless clipped at 0 or 1
            if 0 < b < 1:
                assert (m - b) ** 2 == pytest.approx(t**2 * b * (1 - b) / 10)
    assert wilson_mean_interval([1] * 10)[0] == pytest.approx(0.6615, abs=1e-4)  # not [1, 1]
    lo, hi = wilson_mean_interval([1])  # one label: a wide interval, not NaN
    assert 0 <= lo < 0.05 and hi == 1.0
    assert all(math.isnan(b) for b in wilson_mean_interval([]))
    # ppi_mean's human-only interval is this one
    r = ppi_mean([1, 1, 1, 0.5], [1, 1, 0, 0.5], [1, 0, 1])
    assert (r["classical_lo"], r["classical_hi"]) == wilson_mean_interval([1, 1, 1, 0.5])
    assert r["classical_hi"] - r["classical_lo"] > 0.3
    assert math.isnan(ppi_mean([], [], [1])["classical_lo"])


def test_ppi_mean_by_hand() -> None:
    y, fl, fu = [1, 0, 1, 1, 0.5, 0], [1, 0, 1, 0, 0.5, 1], [1, 1, 0, 1, 0, 1, 0.5]
    r = ppi_mean(y, fl, fu)
    rect = np.subtract(y, fl)  # [0, 0, 0, 1, 0, -1]: two disagreements in six
    est = np.mean(fu) + rect.mean()
    guard = (2 + 2) / (6 + 4) * 1.0 * 6 / 5  # Agresti-Coull share x E[V^2], V = +-1
    assert guard > np.var(rect, ddof=1)
    se = math.sqrt(np.var(fu, ddof=1) / 7 + guard / 6)
    t = sps.t.ppf(0.975, 5)
    assert r["estimate"] == pytest.approx(est) and r["se"] == pytest.approx(se)
    assert (r["lo"], r["hi"]) == pytest.approx((est - t * se, est + t * se))
    assert r["classical"] == pytest.approx(np.mean(y)) and r["lam"] == 1.0
    # a judge unrelated to the labels: power tuning falls back to the human mean
    tuned = ppi_mean([1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 1, 0, 1, 0], power_tuning=True)
    assert tuned["lam"] == 0.0 and tuned["estimate"] == pytest.approx(0.5)
    # no unlabeled items: PPI is the classical estimate
    alone = ppi_mean([1, 0, 1], [1, 1, 1], [])
    assert alone["estimate"] == pytest.approx(2 / 3) == alone["classical"]
    assert math.isnan(ppi_mean([], [], [1, 0])["estimate"])
    # a judge that agrees with all 10 labels: not a zero-width rectifier term
    agree = ppi_mean([1] * 5 + [0] * 5, [1] * 5 + [0] * 5, [1, 0] * 50)
    p = 2 / 14  # Agresti-Coull share of disagreements, nonzero value 1/2 assumed
    assert agree["se"] == pytest.approx(math.sqrt(np.var([1, 0] * 50, ddof=1) / 100
                                                  + p * 0.25 * 10 / 9 / 10))  # fmt: skip


def test_agreement_ci_matches_cohen_kappa() -> None:
    rng = np.random.default_rng(3)
    a = list(rng.choice(["candidate", "other", "tie"], 40))
    b = [x if rng.random() < 0.6 else "tie" for x in a]
    r = agreement_ci(a, b, n_boot=500)
    assert r["kappa"] == pytest.approx(cohen_kappa(a, b))
    assert r["agreement"] == pytest.approx(np.mean([x == y for x, y in zip(a, b, strict=True)]))
    assert r["agreement_lo"] <= r["agreement"] <= r["agreement_hi"]
    assert r["kappa_lo"] <= r["kappa"] <= r["kappa_hi"] and r["kappa_hi"] - r["kappa_lo"] > 0.1


def test_win_rates_use_the_unlabeled_pairs() -> None:
    """Pure: 4 labeled pairs (human + judge) and 6 judged only, one model pair."""

    def rows(n: int, outcomes: list[str], start: int) -> pd.DataFrame:
        return pd.DataFrame(
            {"candidate_kind": "text", "candidate_id": [f"a{start + i}" for i in range(n)],
             "other_kind": "text", "other_id": [f"b{start + i}" for i in range(n)],
             "criterion": "overall", "outcome": outcomes}
        )  # fmt: skip

    human = rows(4, ["candidate", "candidate", "other", "tie"], 0).assign(annotator="ann")
    judge = pd.concat(
        [rows(4, ["candidate", "candidate", "candidate", "tie"], 0),
         rows(6, ["candidate", "other", "candidate", "candidate", "tie", "other"], 4)]
    ).assign(judge_model="j")  # fmt: skip
    names = {("text", f"a{i}"): "x" for i in range(10)} | {
        ("text", f"b{i}"): "y" for i in range(10)
    }
    w = win_rate_table(judge, human, names).iloc[0]
    expect = ppi_mean([1, 1, 0, 0.5], [1, 1, 1, 0.5], [1, 0, 1, 1, 0.5, 0])
    assert (w.model_a, w.model_b, w.n_labeled, w.n_unlabeled) == ("x", "y", 4, 6)
    assert w.ppi == pytest.approx(expect["estimate"]) and w.human == pytest.approx(0.625)
    assert w.judge == pytest.approx(np.mean([1, 1, 1, 0.5, 1, 0, 1, 1, 0.5, 0]))
    # with only 2 labels kept, the other 2 labeled pairs count as unlabeled
    w2 = win_rate_table(judge, human, names, n_labeled=2).iloc[0]
    assert (w2.n_labeled, w2.n_unlabeled, w2.human_all) == (2, 8, pytest.approx(0.625))


# -- calibrate_judge on an imported file ----------------------------------------------------
#: prompt marker, model A, model B, ann's choice, bob's choice, the judge's winner
PAIRS = [
    ("<q1>", "alpha", "beta", "1", "1", "alpha"),
    ("<q2>", "beta", "gamma", "A", "1 is better", "beta"),
    ("<q3>", "alpha", "gamma", "1", "1", "gamma"),
    ("<q4>", "alpha", "beta", "2", "1", "alpha"),
    ("<q5>", "beta", "gamma", "1", "About the same", "beta"),
    ("<q6>", "alpha", "gamma", "1", "2", "tie"),
]


def _export(path: Path) -> Path:
    recs = [
        {"rater": who, "prompt": f"Question {q}", "m1": ma, "m2": mb,
         "out1": f"{ma} answers {q}", "out2": f"{mb} answers {q}", "pick": pick}
        for q, ma, mb, ann, bob, _ in PAIRS for who, pick in (("ann", ann), ("bob", bob))
    ]  # fmt: skip
    path.write_text(json.dumps(recs))
    return path


MAP = {"annotator": "rater", "model_a": "m1", "model_b": "m2", "text_a": "out1",
       "text_b": "out2", "choice": "pick"}  # fmt: skip


def _script(store: Store) -> dict[str, list[str]]:
    """Per prompt, the judge answers (unswapped, swapped) that make its winner win."""
    names = readers.human_side_models(store)
    script = {}
    pairs = human_pairs(store)
    prompts = {i: readers.item_prompt(store, "cal", i) for i in pairs["item_id"]}
    for p in pairs.itertuples(index=False):
        q, _, _, _, _, winner = next(x for x in PAIRS if x[0] in prompts[p.item_id])
        cand = names[(p.a_kind, p.a_id)]
        script[q] = [A, A] if winner == "tie" else ([A, B] if cand == winner else [B, A])
    return script


def _majority_in_candidate_terms(store: Store) -> tuple[list[str], list[str]]:
    """Expected (judge, human majority) outcomes per pair, computed from PAIRS by hand."""
    names = readers.human_side_models(store)
    ho = human_outcomes(readers.human_judgments(store, criterion="overall"))
    side = {"1": 0, "A": 0, "1 is better": 0, "2": 1, "About the same": None}
    judge, major = [], []
    for q, ma, mb, ann, bob, winner in PAIRS:
        row = ho[ho["candidate_id"].isin(
            [k[1] for k, m in names.items() if m in (ma, mb)]
        )]  # fmt: skip
        prompt_rows = [
            r for r in row.itertuples() if q in readers.item_prompt(store, "cal", r.item_id)
        ]
        cand = names[(prompt_rows[0].candidate_kind, prompt_rows[0].candidate_id)]

        def label(model: str | None, cand: str = cand) -> str:
            return "tie" if model is None else ("candidate" if model == cand else "other")

        picks = [None if side[c] is None else (ma, mb)[side[c]] for c in (ann, bob)]
        maj = picks[0] if picks[0] == picks[1] else None
        judge.append(label(None if winner == "tie" else winner))
        major.append(label(maj))
    return judge, major


def test_calibrate_judge_on_an_imported_file(store, tmp_path: Path, capsys) -> None:
    path = _export(tmp_path / "export.json")
    import_preferences(store, path, "cal", columns=MAP)
    assert len(human_pairs(store)) == 6  # two annotators, six distinct pairs
    before = calibration_report(store)
    assert before.agreement.empty and "no judge verdicts" in before.note
    # the note names a command that exists
    words = before.note.split("run ")[1].split(" --")[0].split()
    assert words == ["slamkit", "human", "calibrate"]
    args = build_parser().parse_args([*words[1:], "--base-url", "http://x", "--model", "m"])
    assert args.func.__name__ == "_calibrate"
    with FakeServer(_script(store)) as srv:
        cfg = JudgeConfig(base_url=srv.base_url, model="fake-judge", api_key_env="SLAMKIT_K",
                          timeout_s=5, max_attempts=2, backoff_s=0.01)  # fmt: skip
        port = srv.port
        cal = calibrate_judge(store, cfg, progress=False, n_boot=100)
    assert cal.judged == {"planned": 12, "cached": 0, "done": 12, "failed": 0}
    judge, major = _majority_in_candidate_terms(store)
    row = cal.agreement.set_index("annotator").loc["majority"]
    assert row.n == 6 and row.agreement == pytest.approx(0.5)  # q1, q2, q6 agree
    assert row.kappa == pytest.approx(cohen_kappa(judge, major))
    assert row.agreement_lo <= 0.5 <= row.agreement_hi
    assert set(cal.agreement["annotator"]) == {"majority", "ann", "bob"}
    # ann and bob agree on q1-q3 only
    cohen = cal.annotators[cal.annotators["statistic"] == "cohen"].iloc[0]
    assert (cohen.rater_a, cohen.rater_b, cohen.n, cohen.agreement) == ("ann", "bob", 6, 0.5)
    # ratings side by side, with the rank correlation of the two orders
    r = cal.ratings.set_index("model")
    assert set(r.index) == {"alpha", "beta", "gamma"}
    assert r.loc["alpha", "human_rank"] == 1
    assert (r["human_lo"] <= r["human_theta"]).all() and (r["judge_theta"] <= r["judge_hi"]).all()
    rho = sps.spearmanr(r["human_theta"], r["judge_theta"]).statistic
    assert cal.spearman == {"fake-judge": pytest.approx(rho)}
    # win rates: every pair labeled, so PPI is the human estimate; alpha beat beta 1 and 0.5
    w = cal.win_rates.set_index(["model_a", "model_b"]).loc[("alpha", "beta")]
    assert (w.n_labeled, w.n_unlabeled) == (2, 0)
    assert w.human == pytest.approx(0.75) == w.ppi and w.judge == pytest.approx(1.0)
    assert cal.summary().iloc[0].kappa == pytest.approx(row.kappa)
    # resumable: nothing is sent again; the CLI prints the same tables
    with FakeServer({"<q": ["500"]}, port=port) as srv:  # same endpoint, same judgment ids
        again = calibrate_judge(store, cfg, progress=False, n_boot=50)
    assert again.judged == {"planned": 12, "cached": 12, "done": 0, "failed": 0}
    assert srv.requests == []
    db = str(store.path)
    store.close()
    assert main(["--store", db, "human", "report", "--judge", "fake-judge"]) == 0
    out = capsys.readouterr().out
    assert "judge-human agreement" in out and "Spearman" in out and "majority" in out


def test_empty_store_gives_empty_tables_with_a_note(store) -> None:
    cal = calibration_report(store)
    assert cal.agreement.empty and cal.ratings.empty and cal.win_rates.empty
    assert cal.annotators.empty and "no human labels" in cal.note
    assert "no human labels" in repr(cal) and cal.summary().empty


def test_widget_labels_calibrate_like_imported_ones(store) -> None:
    """A/B widget labels (generation vs reference) use the judge's default pairs: a judge
    run before calibration is reused, not repeated."""
    from helpers import add_synthetic

    from slamkit.human import build_ab_queue, record_choice
    from slamkit.judge import run_judge

    add_synthetic(store, gens={("m1", "i1"): "gen one", ("m1", "i2"): "gen two"})
    queue = build_ab_queue(store)
    for pair in queue.to_dict("records"):  # ann prefers the generation on both items
        gen_left = pair["left_kind"] == "generation"
        record_choice(store, "ann", pair, "left" if gen_left else "right")
    with FakeServer({"i1": [A, B], "i2": [B, A]}) as srv:  # gen wins i1, reference i2
        cfg = JudgeConfig(base_url=srv.base_url, model="fake-judge", api_key_env="SLAMKIT_K",
                          timeout_s=5, max_attempts=2, backoff_s=0.01)  # fmt: skip
        assert run_judge(store, cfg, progress=False).done == 4
        cal = calibrate_judge(store, cfg, progress=False, n_boot=50)
    assert cal.judged == {"planned": 4, "cached": 4, "done": 0, "failed": 0}
    row = cal.agreement.set_index("annotator").loc["ann"]
    assert (row.n, row.agreement) == (2, 0.5)
    w = cal.win_rates.iloc[0]  # gpt-4 (model_a, first by name) won no human label
    assert (w.model_a, w.model_b, w.human, w.judge) == ("gpt-4", "model-m1", 0.0, 0.5)


def test_per_criterion_choices_meet_the_judge_on_the_same_criterion(store, tmp_path) -> None:
    path = tmp_path / "crit.jsonl"
    recs = [
        {"annotator": "ann", "prompt": f"<c{i}>", "text_a": f"a{i}", "text_b": f"b{i}",
         "model_a": "x", "model_b": "y", "choice": "1", "clarity": "2"}
        for i in range(3)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    import_preferences(store, path, "crit", criteria={"clarity": "clarity"})
    with FakeServer({"<c": [A]}) as srv:  # always 'A': every verdict flips with the order
        cfg = JudgeConfig(base_url=srv.base_url, model="fake-judge", api_key_env="SLAMKIT_K",
                          timeout_s=5, max_attempts=2, backoff_s=0.01)  # fmt: skip
        cal = calibrate_judge(store, cfg, criteria=["clarity", "overall"], progress=False,
                              n_boot=50)  # fmt: skip
    assert cal.judged == {"planned": 12, "cached": 0, "done": 12, "failed": 0}
    got = cal.agreement.set_index(["criterion", "annotator"])
    assert got.loc[("clarity", "ann"), "n"] == 3 == got.loc[("overall", "ann"), "n"]
    assert got.loc[("clarity", "ann"), "agreement"] == 0.0  # judge: ties, human: a choice
    assert set(cal.ratings["comparisons"]) == {3}  # ratings are on the overall choice only
