"""OpenAIBackend and capture_references: real llama_cpp.server, fake misbehaving servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slamkit.backends import Backend, Sampling
from slamkit.backends.mock import MockBackend
from slamkit.backends.openai_compat import OpenAIBackend, public_url
from slamkit.errors import BackendError
from slamkit.references import capture_references
from slamkit.tasks import add_task

PLANTED = "sk-planted-DO-NOT-LEAK-8f3a9c2e71b4"
SMALL = Sampling(temperature=0.0, max_tokens=16)


class FakeHandler(BaseHTTPRequestHandler):
    """401 that echoes the key (like OpenAI's message), or a stream without usage."""

    mode = "auth"
    bodies: list[dict] = []

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append(body)
        if self.mode == "auth":
            token = self.headers.get("Authorization", "")
            err = {"error": {"message": f"Incorrect API key provided: {token}", "code": 401}}
            self._send(401, json.dumps(err).encode())
            return
        if "stream_options" in body:
            err = {"error": {"message": "Unknown field: stream_options", "code": 400}}
            self._send(400, json.dumps(err).encode())
            return
        events = []
        for i, word in enumerate(["Hello", " there", " friend"]):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            events.append({"id": "x", "object": "chat.completion.chunk", "created": 0,
                           "model": "fake", "choices": [{"index": 0, "delta": delta,
                                                         "finish_reason": None}]})  # fmt: skip
        events.append({"id": "x", "object": "chat.completion.chunk", "created": 0,
                       "model": "fake", "choices": [{"index": 0, "delta": {},
                                                     "finish_reason": "stop"}]})  # fmt: skip
        sse = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(200, sse.encode(), "text/event-stream")


@pytest.fixture()
def fake_server() -> Iterator[tuple[str, type[FakeHandler]]]:
    handler = type("H", (FakeHandler,), {"bodies": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", handler
    srv.shutdown()
    srv.server_close()


def all_text(store) -> str:
    """Every value of every table (and the raw file) as one string, to hunt for secrets."""
    tables = store.df("SELECT table_name FROM duckdb_tables()")["table_name"]
    text = "".join(store.df(f"SELECT * FROM {t}").to_csv() for t in tables)
    return text


def test_missing_key_for_real_openai_names_env_var(monkeypatch) -> None:
    monkeypatch.delenv("MY_GPT_KEY", raising=False)
    with pytest.raises(BackendError, match="MY_GPT_KEY"):
        OpenAIBackend("gpt-4", api_key_env="MY_GPT_KEY")
    be = OpenAIBackend("local", base_url="http://127.0.0.1:9/v1", api_key_env="MY_GPT_KEY")
    assert isinstance(be, Backend) and be.name == "local" and be.load_time_s is None
    assert be.base_url == "http://127.0.0.1:9/v1"
    be.close()


def test_public_url_drops_credentials() -> None:
    assert public_url("https://user:pw@host:8443/v1/?api-key=abc") == "https://host:8443/v1"


def test_key_never_in_error_messages(monkeypatch, fake_server) -> None:
    url, handler = fake_server
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    be = OpenAIBackend("fake", base_url=url, max_retries=0)
    with pytest.raises(BackendError) as err:
        be.generate([{"role": "user", "content": "hi"}], SMALL, seed=0)
    assert "OPENAI_API_KEY" in str(err.value) and "fake" in str(err.value)
    assert PLANTED not in str(err.value) and PLANTED[:12] not in str(err.value)
    assert err.value.__cause__ is None and PLANTED not in repr(be)
    # nothing listening: a connection error, also scrubbed
    dead = OpenAIBackend("fake", base_url="http://127.0.0.1:9/v1", max_retries=0, timeout=5)
    with pytest.raises(BackendError, match="Cannot connect") as err2:
        dead.generate([{"role": "user", "content": "hi"}], SMALL, seed=0)
    assert PLANTED not in str(err2.value)


def test_server_without_stream_options_or_usage(fake_server) -> None:
    url, handler = fake_server
    handler.mode = "stream"
    be = OpenAIBackend("fake", base_url=url, max_retries=0)
    res = be.generate([{"role": "user", "content": "hi"}], SMALL, seed=7)
    assert res.text == "Hello there friend"
    assert res.completion_tokens == 3 and res.extra["usage"] == "counted"
    assert res.finish_reason == "stop" and res.ttft_s is not None and res.latency_s >= res.ttft_s
    assert handler.bodies[-1]["seed"] == 7 and handler.bodies[-1]["max_tokens"] == 16
    assert handler.bodies[-1]["top_k"] == 40  # extra sampling goes to non-OpenAI servers
    be.generate([{"role": "user", "content": "again"}], SMALL, seed=7)
    assert "stream_options" not in handler.bodies[-1]  # remembered, no second rejection
    assert len(handler.bodies) == 3


def test_capture_records_failures_and_resumes(store) -> None:
    items = [{"id": f"q{i}", "instruction": f"question {i}"} for i in range(4)]
    add_task(store, "t", "{instruction}", items, id_field="id")
    be = MockBackend(["an answer"], fail_on="question 2")
    res = capture_references(store, be, "t", "mock-ref", SMALL, seed=1, progress=False)
    assert (res.done, res.failed) == (3, 1) and "item q2: " in res.errors[0]
    run = store.df("SELECT * FROM runs WHERE run_id = ?", [res.run_id])
    assert run["kind"][0] == "capture"
    errs = store.df("SELECT cell_key, error, run_id FROM job_errors WHERE job = 'capture'")
    assert len(errs) == 1 and "scripted failure" in errs["error"][0]
    assert errs["run_id"][0] == res.run_id
    assert store.count("reference_outputs") == 3
    be.fail_on = None
    again = capture_references(store, be, "t", "mock-ref", SMALL, seed=1, progress=False)
    assert (again.done, again.cached, again.failed) == (1, 3, 0)
    assert store.count("job_errors") == 0  # the retry's success removed the failure
    assert store.count("reference_outputs") == 4
    assert capture_references(store, be, "t", "mock-ref", SMALL, 1, progress=False).done == 0
    assert len(be.calls) == 5


@pytest.mark.slow
def test_capture_from_real_llama_server(store, llama_server: str, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    items = [{"id": f"q{i}", "instruction": q} for i, q in enumerate(
        ["Name a colour.", "What is 2+2?", "Say hello."])]  # fmt: skip
    add_task(store, "t", "{instruction}", items, id_field="id", system_prompt="Be brief.")
    be = OpenAIBackend("smollm2", base_url=llama_server)
    res = capture_references(store, be, "t", "smollm2", SMALL, seed=0, limit=2, progress=False)
    assert (res.done, res.failed) == (2, 0)
    refs = store.df("SELECT * FROM reference_outputs ORDER BY item_id")
    assert list(refs["item_id"]) == ["q0", "q1"]
    assert all(isinstance(t, str) and t for t in refs["text"])
    assert refs["completion_tokens"].notna().all()
    assert refs["completion_tokens"].between(1, 16).all()
    assert refs["ttft_s"].notna().all() and refs["latency_s"].notna().all()
    assert ((refs["ttft_s"] > 0) & (refs["latency_s"] >= refs["ttft_s"])).all()
    assert set(refs["origin"]) == {llama_server}
    # llama_cpp.server ignores stream_options: completion tokens are counted from the
    # stream; the count and the text equal the server's own non-streaming answer.
    msgs = [{"role": "user", "content": "Write a haiku about the sea."}]
    direct = be.generate(msgs, SMALL, seed=0)
    assert direct.extra.get("usage") == "counted"
    import openai

    plain = openai.OpenAI(api_key="x", base_url=llama_server).chat.completions.create(
        model="smollm2", messages=msgs, max_tokens=16, temperature=0.0, top_p=1.0, seed=0,
        extra_body={"top_k": 40, "repeat_penalty": 1.0},
    )  # fmt: skip
    assert direct.text == plain.choices[0].message.content
    assert direct.completion_tokens == plain.usage.completion_tokens
    assert direct.decode_tps is not None and direct.decode_tps > 0
    # rerun: nothing new; then the rest
    again = capture_references(store, be, "t", "smollm2", SMALL, seed=0, limit=2, progress=False)
    assert again.done == 0 and again.run_id is None
    rest = capture_references(store, be, "t", "smollm2", SMALL, seed=0, progress=False)
    assert (rest.done, rest.cached) == (1, 2)
    be.close()
    # the planted key is nowhere in the store
    assert PLANTED not in all_text(store)
    store.db.execute("CHECKPOINT")
    assert PLANTED.encode() not in Path(store.path).read_bytes()


@pytest.mark.slow
def test_cli_refs_capture(llama_server: str, tmp_path: Path, monkeypatch, capsys) -> None:
    from slamkit.cli import main
    from slamkit.store import Store

    monkeypatch.setenv("OPENAI_API_KEY", PLANTED)
    db = str(tmp_path / "cli.duckdb")
    assert main(["--store", db, "refs", "alpaca-eval", "--limit", "2"]) == 0
    args = ["--store", db, "refs", "capture", "--base-url", llama_server, "--model", "smollm2"]
    args += ["--limit", "1", "--max-tokens", "8"]
    assert main(args) == 0
    out = capsys.readouterr()
    assert "1 captured" in out.out and PLANTED not in out.out + out.err
    with Store(db) as st:
        df = st.df("SELECT item_id, source_model, origin FROM reference_outputs "
                   "WHERE source_model = 'smollm2'")  # fmt: skip
        assert df.to_dict("list") == {
            "item_id": ["alpaca-0001"], "source_model": ["smollm2"], "origin": [llama_server],
        }  # fmt: skip
        assert PLANTED not in all_text(st)
