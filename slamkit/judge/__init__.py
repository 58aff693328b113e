"""LLM as judge over any OpenAI-compatible endpoint (pairwise both orders, criteria, rubric).

>>> from slamkit.judge import JudgeConfig, run_judge  # doctest: +SKIP
>>> cfg = JudgeConfig(base_url="http://127.0.0.1:8000/v1", model="smollm2")  # doctest: +SKIP
>>> run_judge(store, cfg, mode="pairwise")  # doctest: +SKIP
{'planned': 10, 'skipped': 0, 'judged': 9, 'failed': 1}
"""

from __future__ import annotations

from slamkit.judge.analysis import load_judgments, pairwise_outcomes, position_bias
from slamkit.judge.client import JudgeClient, JudgeConfig, JudgeError, parse_json_answer
from slamkit.judge.prompts import DEFAULT_CRITERIA, DEFAULT_RUBRIC
from slamkit.judge.run import MODES, build_pairs, judge_endpoint, plan_judgments, run_judge

__all__ = [
    "DEFAULT_CRITERIA",
    "DEFAULT_RUBRIC",
    "MODES",
    "JudgeClient",
    "JudgeConfig",
    "JudgeError",
    "build_pairs",
    "judge_endpoint",
    "load_judgments",
    "pairwise_outcomes",
    "parse_json_answer",
    "plan_judgments",
    "position_bias",
    "run_judge",
]
