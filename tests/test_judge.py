"""Judge: retries, timeouts and failure records against a misbehaving fake server; strict
JSON parsing (never eval); order-robust outcomes and position bias on hand-made rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from helpers import FakeServer, add_synthetic

from slamkit.errors import SlamkitError
from slamkit.judge import (
    JudgeConfig,
    JudgeError,
    build_pairs,
    load_judgments,
    pairwise_outcomes,
    parse_json_answer,
    position_bias,
    run_judge,
)

SECRET = "sk-test-SECRET-never-stored"


A = 'ok:{"reasoning": "A is better", "verdict": "A"}'
B = 'ok:{"reasoning": "B is better", "verdict": "B"}'


def config(url: str, **kw) -> JudgeConfig:
    base = dict(
        base_url=url, model="fake-judge", api_key_env="SLAMKIT_TEST_JUDGE_KEY",
        timeout_s=0.5, max_attempts=3, backoff_s=0.01, max_backoff_s=0.05,
    )  # fmt: skip
    return JudgeConfig(**{**base, **kw})


@pytest.fixture()
def two_items(store) -> Iterator:
    """One model, items i1 (prompt 'i1') and i2 (prompt 'i2'), GPT-4 references."""
    add_synthetic(store, gens={("m1", "i1"): "gen one", ("m1", "i2"): "gen two"})
    yield store


def test_retries_timeouts_and_failures_are_recorded(two_items, monkeypatch) -> None:
    store = two_items
    monkeypatch.setenv("SLAMKIT_TEST_JUDGE_KEY", SECRET)
    # i1: unswapped call gets 429, 500, then an answer; swapped call answers at once.
    #     (requests for one item alternate orders, so script per order via attempts)
    # i2: malformed body on the first order, then hangs past the client timeout forever.
    script = {"i1": ["429", "500", A, B], "i2": ["malformed", "hang"]}
    with FakeServer(script) as srv:
        counts = run_judge(store, config(srv.base_url), progress=False)
    assert counts.counts() == {"planned": 4, "cached": 0, "done": 2, "failed": 2}
    df = load_judgments(store).set_index(["item_id", "order_swapped"])
    assert len(df) == 4  # nothing dropped

    ok = df.loc[("i1", False)]
    assert (ok.verdict, ok.attempts) == ("A", 3) and pd.isna(ok.error)
    assert (ok.prompt_tokens, ok.completion_tokens) == (11, 7) and ok.latency_s > 0
    raw = json.loads(ok.raw)
    assert (
        raw["retries"] == ["HTTP 429", "HTTP 500"]
        and "[Response A]\ngen one" in (raw["messages"][1]["content"])
    )
    assert df.loc[("i1", True)].verdict == "B"  # B is the candidate when swapped

    bad = df.loc[("i2", False)]
    assert pd.isna(bad.verdict) and bad.error.startswith("malformed response")
    assert bad.attempts == 1  # a broken body is not retried
    hung = df.loc[("i2", True)]
    assert pd.isna(hung.verdict) and "timed out after 0.5s (3 attempts)" in hung.error
    assert json.loads(hung.raw)["retries"] == ["timeout"] * 3

    # the key reached the server as a header but never the store
    assert srv.headers[0]["authorization"] == f"Bearer {SECRET}"
    dump = store.df("SELECT * FROM judgments").to_json()
    assert SECRET not in dump and "SLAMKIT_TEST_JUDGE_KEY" not in dump

    # resume (same endpoint, restarted): successes are skipped, failures retried and
    # replaced (still one row each)
    with FakeServer({"i1": [A], "i2": [A]}, port=srv.port) as srv2:
        again = run_judge(store, config(srv2.base_url), progress=False)
    assert again.counts() == {"planned": 4, "cached": 2, "done": 2, "failed": 0}
    assert len(srv2.requests) == 2
    assert store.count("judgments") == 4 and store.count("judgments", "error IS NULL") == 4
    with FakeServer({"i1": [A], "i2": [A]}, port=srv.port) as srv3:
        assert run_judge(store, config(srv3.base_url), progress=False).cached == 4
    assert srv3.requests == []


def test_key_echoed_by_the_server_never_reaches_the_store(two_items, monkeypatch) -> None:
    monkeypatch.setenv("SLAMKIT_TEST_JUDGE_KEY", "abcd1234SECRETKEYVALUE9876")
    # i1: 401 echoing the key (not retried); i2: 500 echoing it (retried, then given up)
    with FakeServer({"i1": ["echo401"], "i2": ["echo500"]}) as srv:
        counts = run_judge(two_items, config(srv.base_url), progress=False)
    assert counts.counts() == {"planned": 4, "cached": 0, "done": 0, "failed": 4}
    assert srv.headers[0]["authorization"] == "Bearer abcd1234SECRETKEYVALUE9876"
    df = load_judgments(two_items).set_index("item_id")
    dump = two_items.df("SELECT * FROM judgments").to_json()
    assert "abcd1234SECRETKEYVALUE9876" not in dump
    assert df.loc["i1", "error"].str.startswith("HTTP 401: ").all()
    assert df.loc["i1", "error"].str.contains("invalid token ***", regex=False).all()
    assert df.loc["i2", "error"].str.contains("HTTP 500 after 3 attempts").all()


def test_judgment_ids_include_the_endpoint(two_items) -> None:
    # the same judge model name behind another server is a different judge
    with FakeServer({"i": [A]}) as one, FakeServer({"i": [B]}) as two:
        assert run_judge(two_items, config(one.base_url), progress=False).done == 4
        again = run_judge(two_items, config(two.base_url), progress=False)
        assert again.counts() == {"planned": 4, "cached": 0, "done": 4, "failed": 0}
        assert len(two.requests) == 4
        # the same endpoint written with credentials or a trailing slash is the same judge
        url = one.base_url.replace("http://", "http://u:pw@") + "/"
        assert run_judge(two_items, config(url), progress=False).cached == 4
    df = load_judgments(two_items)
    assert sorted(df.judge_endpoint.value_counts().tolist()) == [4, 4]
    assert set(df.judge_endpoint) == {one.base_url, two.base_url}


def test_code_in_judge_answer_is_never_executed(two_items, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = f"__import__('os').system('touch {marker}')"
    evil_json = json.dumps({"reasoning": evil, "verdict": "tie"})
    with FakeServer({"i1": ["ok:" + evil], "i2": ["ok:" + evil_json]}) as srv:
        counts = run_judge(two_items, config(srv.base_url), progress=False)
    assert counts.failed == 2 and counts.done == 2
    df = load_judgments(two_items).set_index("item_id")
    for row in df.loc[["i1"]].itertuples():
        assert pd.isna(row.verdict) and row.error.startswith("answer is not JSON")
        assert json.loads(row.raw)["response"] == evil  # stored as text
    assert set(df.loc["i2", "reasoning"]) == {evil}  # a JSON string, kept as data
    assert not marker.exists()


def test_schema_validation_and_format_fallback(two_items) -> None:
    wrong = 'ok:{"reasoning": "x", "verdict": "C"}'
    script = {"i1": ["reject", "reject500", A], "i2": [wrong]}
    with FakeServer(script) as srv:
        run_judge(two_items, config(srv.base_url), progress=False)
    first = srv.requests[0]["response_format"]
    assert first["type"] == "json_schema" and first["json_schema"]["strict"] is True
    assert srv.requests[1]["response_format"] == {
        "type": "json_object",
        "schema": first["json_schema"]["schema"],
    }
    assert srv.requests[2]["response_format"] == {"type": "json_object"}
    df = load_judgments(two_items)
    ok = df[df.item_id == "i1"]
    assert set(ok.verdict) == {"A"} and set(ok.attempts) == {1}
    assert {json.loads(p)["response_format"] for p in ok.params} == {"json_object"}
    bad = df[df.item_id == "i2"]
    assert bad.verdict.isna().all()
    assert bad.error.str.contains("does not match the schema at verdict").all()


def test_rubric_and_criteria_modes(two_items) -> None:
    grade = 'ok:{"reasoning": "fine", "score": 7}'
    with FakeServer({"i1": [grade], "i2": ['ok:{"reasoning": "", "score": 11}']}) as srv:
        counts = run_judge(two_items, config(srv.base_url), mode="rubric", progress=False)
    assert counts.counts() == {"planned": 2, "cached": 0, "done": 1, "failed": 1}
    assert (
        "[Reference answer, for guidance]\nthe cat is on the mat"
        in (srv.requests[0]["messages"][1]["content"])
    )
    df = load_judgments(two_items).set_index("item_id")
    assert (df.loc["i1", "score"], df.loc["i1", "verdict"]) == (7.0, "7")
    assert "11 is greater than the maximum of 10" in df.loc["i2", "error"]

    with FakeServer({"i": [A]}) as srv:
        counts = run_judge(
            two_items, config(srv.base_url), mode="criteria", criteria=["clarity", "overall"],
            progress=False,
        )  # fmt: skip
    assert counts.done == 8  # 2 items x 2 criteria x 2 orders
    crit = load_judgments(two_items).query("mode == 'criteria'")
    assert sorted(set(crit.criterion)) == ["clarity", "overall"]
    assert "clearer" in srv.requests[0]["messages"][1]["content"]


def test_parse_json_answer() -> None:
    schema = {"type": "object", "required": ["verdict"]}
    assert parse_json_answer('```json\n{"verdict": "A"}\n```', schema) == ({"verdict": "A"}, None)
    assert parse_json_answer("", schema) == (None, "empty answer")
    assert parse_json_answer("{'verdict': 'A'}", schema)[1].startswith("answer is not JSON")
    assert "required property" in parse_json_answer("{}", schema)[1]


def test_config_errors(monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(JudgeError, match="set the environment variable NO_SUCH_KEY_VAR"):
        from slamkit.judge import JudgeClient

        JudgeClient(JudgeConfig("https://api.openai.com/v1", "gpt-4", "NO_SUCH_KEY_VAR"))
    with pytest.raises(JudgeError, match="must start with http"):
        JudgeConfig("localhost:8000", "m")
    cfg = JudgeConfig("http://user:pw@127.0.0.1:9/v1?token=t", "m")
    assert cfg.endpoint == "http://127.0.0.1:9/v1"


def _row(judge: str, cand: str, swapped: bool, verdict: str | None) -> dict:
    a, b = (("reference", "r"), ("generation", cand)) if swapped else (
        ("generation", cand), ("reference", "r"))  # fmt: skip
    return {"judge_model": judge, "mode": "pairwise", "criterion": "overall", "task_id": "t",
            "item_id": cand, "a_kind": a[0], "a_id": a[1], "b_kind": b[0], "b_id": b[1],
            "order_swapped": swapped, "verdict": verdict}  # fmt: skip


def test_outcomes_and_position_bias_hand_computed() -> None:
    rows = [
        # g1: candidate wins in both orders
        _row("j", "g1", False, "A"), _row("j", "g1", True, "B"),
        # g2: "A" both times = the winner flips with the order -> tie, flipped
        _row("j", "g2", False, "A"), _row("j", "g2", True, "A"),
        # g3: reference wins once, tie once -> tie, inconsistent but not a flip
        _row("j", "g3", False, "B"), _row("j", "g3", True, "tie"),
        # g4: second order failed -> no outcome yet
        _row("j", "g4", False, "A"), _row("j", "g4", True, None),
    ]  # fmt: skip
    out = pairwise_outcomes(pd.DataFrame(rows)).set_index("candidate_id")
    assert out.loc["g1", "outcome"] == "candidate"
    assert (out.loc["g2", "outcome"], out.loc["g2", "flipped"]) == ("tie", True)
    assert (out.loc["g3", "verdict_ab"], out.loc["g3", "outcome"]) == ("other", "tie")
    assert not out.loc["g3", "flipped"]
    assert out.loc["g4", "outcome"] is None
    bias = position_bias(out.reset_index()).iloc[0]
    assert (bias.n_pairs, bias.flips) == (3, 1)
    assert bias.flip_rate == pytest.approx(1 / 3)
    assert bias.inconsistent_rate == pytest.approx(2 / 3)
    # decisive verdicts: g1 A,B g2 A,A g3 B -> position A chosen 3 of 5 times
    assert bias.first_position_rate == pytest.approx(3 / 5)


def test_build_pairs_filters(two_items) -> None:
    pairs = build_pairs(two_items)
    assert list(pairs.columns) == ["task_id", "item_id", "a_kind", "a_id", "b_kind", "b_id"]
    assert len(pairs) == 2 and set(pairs.b_id) == {"r-i1", "r-i2"}
    assert build_pairs(two_items, model_ids=["nope"]).empty
    assert build_pairs(two_items, sample_index=3).empty
    # a second reference model: the caller must choose, no alphabetical pick
    two_items.insert(
        "reference_outputs",
        {"ref_id": "r-a", "task_id": "t", "item_id": "i1", "source_model": "aaa",
         "sample_index": 0, "text": "x"},
    )  # fmt: skip
    with pytest.raises(SlamkitError, match="from 2 models: 'aaa', 'gpt-4'"):
        build_pairs(two_items)
    assert set(build_pairs(two_items, source_model="gpt-4").b_id) == {"r-i1", "r-i2"}
    assert list(build_pairs(two_items, source_model="aaa").b_id) == ["r-a"]
