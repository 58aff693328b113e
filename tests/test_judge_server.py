"""The judge against a real OpenAI-compatible server: python -m llama_cpp.server (SmolLM2)."""

from __future__ import annotations

import json

import pytest
from helpers import add_synthetic

from slamkit.judge import JudgeConfig, load_judgments, pairwise_outcomes, position_bias, run_judge

pytestmark = pytest.mark.slow


def test_judge_with_real_llama_server(store, llama_server) -> None:
    add_synthetic(
        store,
        gens={("m1", "i1"): "Paris is the capital of France."},
        refs={"i1": "The capital of France is Paris."},
    )
    cfg = JudgeConfig(
        base_url=llama_server, model="smollm2", max_tokens=48, max_reason_chars=40,
        timeout_s=120, backoff_s=0.1,
    )  # fmt: skip
    counts = run_judge(store, cfg, mode="pairwise", progress=False)
    assert counts.counts() == {"planned": 2, "cached": 0, "done": 2, "failed": 0}
    df = load_judgments(store)
    assert sorted(df.order_swapped) == [False, True]
    for row in df.itertuples():
        raw = json.loads(row.raw)
        parsed = json.loads(raw["response"])  # the stored transcript is the JSON answer
        assert row.verdict == parsed["verdict"] in ("A", "B", "tie")
        assert row.reasoning == parsed["reasoning"] and len(row.reasoning) <= 40
        assert row.prompt_tokens > 50 and 0 < row.completion_tokens <= 48
        assert row.latency_s > 0 and row.attempts == 1 and row.error is None
        assert row.judge_endpoint == llama_server
        # llama_cpp.server rejects json_schema; the schema went through json_object
        assert json.loads(row.params)["response_format"] == "json_object_schema"
    bias = position_bias(pairwise_outcomes(df))
    assert bias.n_pairs.tolist() == [1]
    assert 0.0 <= bias.flip_rate.iloc[0] <= 1.0

    # rubric mode, without reasoning: a bare integer score from the schema's range
    cfg_r = JudgeConfig(base_url=llama_server, model="smollm2", max_tokens=12, reasoning=False)
    assert run_judge(store, cfg_r, mode="rubric", progress=False).done == 1
    grade = load_judgments(store).query("mode == 'rubric'").iloc[0]
    assert 1 <= grade.score <= 10 and grade.verdict == str(int(grade.score))

    # resumable: nothing is sent again
    assert run_judge(store, cfg, progress=False).cached == 2
