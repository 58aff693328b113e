"""Plain helpers shared by the test modules (fixtures live in conftest.py).

Test modules import from here (``from helpers import write_gguf``; ``tests/`` is on
``sys.path`` because it holds the rootdir conftest.py) and never from one another:
tests/test_structure.py checks that.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from slamkit.gguf import GGML_TYPES

# -- a tiny GGUF writer for synthetic files ------------------------------------------------

_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _enc_value(vtype: int, value: Any, e: str) -> bytes:
    if vtype in _FMT:
        return struct.pack(e + _FMT[vtype], value)
    if vtype == 8:
        raw = value.encode()
        return struct.pack(e + "Q", len(raw)) + raw
    etype, items = value  # array: (element type, items)
    out = struct.pack(e + "IQ", etype, len(items))
    return out + b"".join(_enc_value(etype, v, e) for v in items)


def write_gguf(
    path: Path,
    kv: list[tuple[str, int, Any]],
    tensors: list[tuple[str, tuple[int, ...], int]],
    version: int = 3,
    e: str = "<",
    alignment: int = 32,
) -> Path:
    """Write a valid GGUF with zeroed tensor data."""
    out = bytearray(b"GGUF" + struct.pack(e + "IQQ", version, len(tensors), len(kv)))
    for key, vtype, value in kv:
        out += _enc_value(8, key, e) + struct.pack(e + "I", vtype) + _enc_value(vtype, value, e)
    offset, sizes = 0, []
    for name, shape, tid in tensors:
        _, block, tsize = GGML_TYPES[tid]
        n = 1
        for d in shape:
            n *= d
        nbytes = n // block * tsize
        out += _enc_value(8, name, e) + struct.pack(e + "I", len(shape))
        out += b"".join(struct.pack(e + "Q", d) for d in shape)
        out += struct.pack(e + "IQ", tid, offset)
        sizes.append(nbytes)
        offset += -(-nbytes // alignment) * alignment
    out += b"\0" * (-len(out) % alignment)
    for i, nbytes in enumerate(sizes):
        out += b"\0" * nbytes
        if i < len(sizes) - 1:
            out += b"\0" * (-nbytes % alignment)
    path.write_bytes(bytes(out))
    return path


#: a few tensors of three types (Q4_0, F32, Q4_K) for synthetic files
TENSORS = [("tok.weight", (64, 10), 2), ("norm", (64,), 0), ("out.weight", (256, 3), 12)]


# -- a store with a task, items, GPT-4 references and generations -------------------------

#: the default task, references and generations of :func:`add_synthetic`
TASK = "t"
REFS = {"i1": "the cat is on the mat", "i2": "a b c d f"}
GENS = {  # (model, item) -> text
    ("m1", "i1"): "the cat sat on the mat",
    ("m1", "i2"): "a b c d e",
    ("m2", "i1"): "The cat is on the mat.",
    ("m2", "i2"): "One. Two. Three. Four. Five.",
}


def add_synthetic(store, gens=GENS, refs=REFS, task_id=TASK) -> dict[tuple[str, str], str]:
    """Insert a task, items, references and generations; return (model, item) -> gen_key."""
    store.insert("tasks", {"task_id": task_id, "template": "{q}"})
    store.insert_many(
        "items",
        [
            {"task_id": task_id, "item_id": i, "position": n, "fields": {"q": i}, "prompt": i}
            for n, i in enumerate(refs)
        ],
    )
    store.insert_many(
        "reference_outputs",
        [
            {"ref_id": f"r-{i}", "task_id": task_id, "item_id": i, "source_model": "gpt-4",
             "sample_index": 0, "text": t}
            for i, t in refs.items()
        ],
    )  # fmt: skip
    for m in {m for m, _ in gens}:
        store.insert("models", {"model_id": m, "name": f"model-{m}", "path": f"/x/{m}.gguf"})
    keys = {}
    rows = []
    for (m, i), text in gens.items():
        keys[(m, i)] = f"g-{m}-{i}"
        rows.append(
            {"gen_key": keys[(m, i)], "run_id": "run", "model_id": m, "task_id": task_id,
             "item_id": i, "sample_index": 0, "seed": 0, "sampling": {}, "text": text,
             "error": None}
        )  # fmt: skip
    store.insert_many("generations", rows)
    return keys


# -- an OpenAI-compatible fake endpoint ------------------------------------------------------


class FakeServer:
    """An OpenAI-compatible chat endpoint that follows a script per item prompt.

    ``script[marker]`` is a list of behaviours consumed one per request whose user message
    contains ``marker``: 'ok:<content>', '429', '500', 'malformed', 'hang', 'reject'
    (422, as a server that does not know the response_format), 'reject500' (the same as
    llama_cpp.server says it: HTTP 500 naming response_format), 'echo401' / 'echo500'
    (an error whose message echoes the bearer token, as some servers do). When a list runs
    out its last behaviour repeats.
    """

    def __init__(self, script: dict[str, list[str]], hang_s: float = 3.0, port: int = 0) -> None:
        self.script = script
        self.hang_s = hang_s
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:  # keep test output quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                user = body["messages"][-1]["content"]
                marker = next(m for m in fake.script if m in user)
                steps = fake.script[marker]
                step = steps.pop(0) if len(steps) > 1 else steps[0]
                if step == "hang":
                    time.sleep(fake.hang_s)
                    step = 'ok:{"reasoning": "late", "verdict": "A"}'
                if step in ("429", "500", "reject", "reject500"):
                    code = {"429": 429, "500": 500, "reject": 422, "reject500": 500}[step]
                    msg = f"scripted {step}" + (": bad response_format" if "rej" in step else "")
                    return self._send(code, {"error": {"message": msg}})
                if step in ("echo401", "echo500"):
                    token = self.headers["authorization"].split()[-1]
                    msg = f"invalid token {token} (Authorization: Bearer {token})"
                    return self._send(int(step[4:]), {"error": {"message": msg}})
                if step == "malformed":
                    return self._send(200, b'{"id": "x", "choices": [ {"mess')
                content = step.removeprefix("ok:")
                self._send(
                    200,
                    {
                        "id": "c1", "object": "chat.completion", "created": 0,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7,
                                  "total_tokens": 18},
                    },
                )  # fmt: skip

            def _send(self, code: int, payload: dict | bytes) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- SLaM tool files (METHOD.md appendix A) --------------------------------------------------

#: a SLaM tool use case: a prompt and the outputs of three models
USECASE = {
    "prompt": "Write a pep talk for: finish report, gym.",
    "prompt_disc": "## Daily Pep Talk\nUp to 4 sentences.",
    "outputs": {
        "gpt-4": ["You can do it!", "Go get them!"],
        "mistral-7b-q4_0": ["Finish the report, then gym.", "Report first."],
        "zephyr-7b-q2_K": ["Keep going."],
    },
}


def write_json(path: Path, obj: object) -> Path:
    """Write ``obj`` as JSON to ``path`` (parents created); return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_slam_dir(root: Path) -> Path:
    """A SLaM tool folder under ``root``: a use case, a human evaluation and a run file."""
    write_json(root / "data" / "peptalk.json", USECASE)
    write_json(
        root / ".human_eval_config" / "responses.json",
        {"11": "You can do it!", "12": "Finish the report, then gym.", "13": "Keep going."},
    )
    write_json(root / "results" / "w1_set0.json", {
        "worker_id": "w1", "question_set_id": 0, "start_time": 1700000000,
        "end_time": 1700000100, "question_index": 2,
        "evals": [
            {"result": {"overall": "Response A", "clarity": "About the Same",
                        "feedback": "A is concrete"},
             "time": 1700000050, "question": ["peptalk", {"mistral-7b-q4_0": 12, "gpt-4": 11}]},
            {"result": {"overall": "Response B", "feedback": ""},
             "time": 1700000090, "question": ["peptalk", {"zephyr-7b-q2_K": 13, "gpt-4": 99}]},
        ],
    })  # fmt: skip
    write_json(root / "runs" / "r1" / "mistral.json", {
        "outputs": [{"response": "Report, then gym!", "time": 1.5},
                    {"response": "Go.", "time": 0.5}],
        "full_prompt": "<s>[INST] Write a pep talk for: finish report, gym. [/INST]",
        "avg_time": 1.0, "model_name": "mistral-7b-q4_0",
    })  # fmt: skip
    return root
