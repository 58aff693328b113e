"""Judge prompts and the JSON schemas their answers must match.

SLaM's judge answered ``[Reasoning] ... [Output] {...}`` and was parsed with ``eval()``.
Here the answer is one JSON object, constrained by a schema where the server supports it,
parsed with ``json.loads`` and validated with ``jsonschema``; it is never executed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: Bump when a prompt or schema changes: it is part of every judgment_id.
PROMPT_VERSION = "1"

DEFAULT_CRITERIA = ("clarity", "helpfulness", "trustworthiness", "overall")

CRITERION_TEXT = {
    "overall": "Which response is better overall?",
    "clarity": "Which response is clearer and easier to read?",
    "helpfulness": "Which response is more helpful for the user's request?",
    "trustworthiness": "Which response is more accurate and trustworthy (no invented facts)?",
    "likability": "Which response would the user like more?",
}

DEFAULT_RUBRIC = (
    "Score the response from 1 (useless or wrong) to 10 (excellent): 1-3 fails the request "
    "or is wrong; 4-6 partly answers it or has notable errors; 7-8 answers it correctly with "
    "minor flaws; 9-10 is correct, complete, clear and concise."
)

SYSTEM_PAIRWISE = (
    "You are an impartial judge. You compare two responses to the same user request. "
    "Do not let the order of the responses, their length or their style decide. "
    "Answer only with a JSON object."
)
SYSTEM_RUBRIC = (
    "You are an impartial judge. You grade one response to a user request on a rubric. "
    "Answer only with a JSON object."
)


def pairwise_schema(reasoning: bool = True, max_reason_chars: int | None = None) -> dict:
    """JSON schema of a pairwise verdict: ``{"reasoning": str, "verdict": "A"|"B"|"tie"}``."""
    props: dict[str, Any] = {}
    if reasoning:
        props["reasoning"] = {"type": "string"}
        if max_reason_chars:
            props["reasoning"]["maxLength"] = max_reason_chars
    props["verdict"] = {"type": "string", "enum": ["A", "B", "tie"]}
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def rubric_schema(
    reasoning: bool = True, max_reason_chars: int | None = None, low: int = 1, high: int = 10
) -> dict:
    """JSON schema of a rubric grade: ``{"reasoning": str, "score": int in [low, high]}``."""
    props: dict[str, Any] = {}
    if reasoning:
        props["reasoning"] = {"type": "string"}
        if max_reason_chars:
            props["reasoning"]["maxLength"] = max_reason_chars
    props["score"] = {"type": "integer", "minimum": low, "maximum": high}
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }


def _answer_hint(schema: dict) -> str:
    shape = {
        k: ("A, B or tie" if "enum" in v else "integer" if v["type"] == "integer" else "...")
        for k, v in schema["properties"].items()
    }
    return "Answer with a JSON object with these keys: " + json.dumps(shape)


def pairwise_messages(
    prompt: str, a: str, b: str, criterion: str, schema: dict
) -> list[dict[str, str]]:
    """Messages asking which of response A and B is better on ``criterion``."""
    question = CRITERION_TEXT.get(criterion, f"Which response is better on {criterion}?")
    user = (
        f"[User request]\n{prompt}\n\n[Response A]\n{a}\n\n[Response B]\n{b}\n\n"
        f'{question} Say "tie" when they are about the same. {_answer_hint(schema)}'
    )
    return [{"role": "system", "content": SYSTEM_PAIRWISE}, {"role": "user", "content": user}]


def rubric_messages(
    prompt: str, response: str, rubric: str, schema: dict, reference: str | None = None
) -> list[dict[str, str]]:
    """Messages asking for a rubric score of one response (optionally reference-guided)."""
    ref = f"[Reference answer, for guidance]\n{reference}\n\n" if reference else ""
    user = (
        f"[User request]\n{prompt}\n\n{ref}[Response]\n{response}\n\n[Rubric]\n{rubric}\n\n"
        f"{_answer_hint(schema)}"
    )
    return [{"role": "system", "content": SYSTEM_RUBRIC}, {"role": "user", "content": user}]


def prompt_fingerprint(*parts: Any) -> str:
    """A short hash of the prompt version, templates and schema (part of judgment ids)."""
    payload = json.dumps(
        [PROMPT_VERSION, SYSTEM_PAIRWISE, SYSTEM_RUBRIC, CRITERION_TEXT, *parts],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
