"""Model, template and endpoint failures: every stored error row and the sweep summary name
the model, the cause and what to do, on one line (issue 12).

Fast: unknown-architecture and incomplete tiny GGUFs (llama.cpp refuses them at once), an
OpenAI-compatible server on 127.0.0.1 answering garbage or too late, the summary and the
``chat_format`` checks. Slow: copies of SmolLM2 whose chat template is hostile, not valid
Jinja, or fails on a system message — and the same files generating with an explicit
chat format.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import TENSORS, write_gguf

from slamkit.backends.base import Sampling
from slamkit.backends.llamacpp import FALLBACK_TEMPLATES, planned_chat_format
from slamkit.backends.mock import MockBackend
from slamkit.backends.openai_compat import OpenAIBackend
from slamkit.catalog import inspect_gguf
from slamkit.engine import JobResult
from slamkit.errors import BackendError, SlamkitError
from slamkit.keys import generation_key
from slamkit.runner import EndpointModel, plan_cells, run_sweep
from slamkit.store import Store
from slamkit.tasks import add_task

SMALL = Sampling(max_tokens=8)


def _task(store: Store, n: int = 2, system_prompt: str | None = None) -> None:
    items = [{"q": f"question {i}"} for i in range(n)]
    add_task(store, "t", "Answer briefly: {q}", items, system_prompt=system_prompt)


def _errors(store: Store) -> list[str]:
    return store.df("SELECT error FROM generations WHERE error IS NOT NULL ORDER BY item_id")[
        "error"
    ].tolist()


def _one_line(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message and len(message) < 800


# -- a GGUF copy with other metadata (the real tensors, byte for byte) -----------------------

_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _skip(buf: bytes, pos: int, vtype: int) -> int:
    if vtype in _SIZES:
        return pos + _SIZES[vtype]
    if vtype == 8:
        return pos + 8 + struct.unpack_from("<Q", buf, pos)[0]
    etype, count = struct.unpack_from("<IQ", buf, pos)
    pos += 12
    if etype in _SIZES:
        return pos + count * _SIZES[etype]
    for _ in range(count):
        pos = _skip(buf, pos, etype)
    return pos


def _kv_string(key: str, value: str) -> bytes:
    k, v = key.encode(), value.encode()
    return struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, len(v)) + v


def rewrite_gguf(src: Path, dst: Path, strings: dict[str, str]) -> Path:
    """Copy the little-endian GGUF ``src`` to ``dst`` with string metadata set (replaced
    or added); tensor infos and tensor data are copied unchanged."""
    buf = src.read_bytes()
    assert buf[:4] == b"GGUF"
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
    pos, entries, alignment = 24, [], 32
    for _ in range(n_kv):
        start = pos
        n = struct.unpack_from("<Q", buf, pos)[0]
        key = buf[pos + 8 : pos + 8 + n].decode()
        pos += 8 + n
        vtype = struct.unpack_from("<I", buf, pos)[0]
        pos += 4
        if key == "general.alignment":
            alignment = struct.unpack_from("<I", buf, pos)[0]
        pos = _skip(buf, pos, vtype)
        entries.append((key, buf[start:pos]))
    infos_start = pos
    for _ in range(n_tensors):
        pos += 8 + struct.unpack_from("<Q", buf, pos)[0]
        n_dims = struct.unpack_from("<I", buf, pos)[0]
        pos += 4 + 8 * n_dims + 4 + 8
    infos = buf[infos_start:pos]
    data_offset = -(-pos // alignment) * alignment
    todo = dict(strings)
    kv = [_kv_string(k, todo.pop(k)) if k in todo else raw for k, raw in entries]
    kv += [_kv_string(k, v) for k, v in todo.items()]
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, len(kv)) + b"".join(kv) + infos
    head += b"\0" * (-len(head) % alignment)
    with open(dst, "wb") as fh:
        fh.write(head)
        fh.write(memoryview(buf)[data_offset:])
    return dst


HOSTILE = "{{ messages.__init__.__globals__ }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
BAD_SYNTAX = "{% for m in messages %}{{ m['content'] }"
NO_SYSTEM = (
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
    "<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
)


@pytest.fixture(scope="module")
def templated(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """SmolLM2 copies whose chat template is hostile / not Jinja / refuses a system turn."""
    d = tmp_path_factory.mktemp("templates")
    return {
        name: rewrite_gguf(smollm2, d / f"{name}.gguf", {"tokenizer.chat_template": tpl})
        for name, tpl in [("evil", HOSTILE), ("badsyntax", BAD_SYNTAX), ("nosystem", NO_SYSTEM)]
    }


# -- the summary -------------------------------------------------------------------------------


def test_summary_lists_the_first_distinct_errors_in_order(store: Store) -> None:
    add_task(store, "t", "{q}", [{"q": f"question {i}"} for i in range(6)])

    class Picky(MockBackend):
        def generate(self, messages, sampling, seed):  # type: ignore[no-untyped-def]
            n = int(messages[-1]["content"].split()[-1])
            if n == 0:
                return super().generate(messages, sampling, seed)
            raise RuntimeError(f"problem {min(n, 4)}")  # 1, 2, 3, 4, 4

    res = run_sweep(
        store, [EndpointModel("m1", "http://127.0.0.1:9/v1")], "t",
        backend_factory=lambda m: Picky(name=m.name), progress=False,
    )  # fmt: skip
    assert (res.generated, res.failed) == (1, 5)
    assert [e.split("(RuntimeError: ")[1][:9] for e in res.errors] == [
        "problem 1", "problem 2", "problem 3", "problem 4",
    ]  # fmt: skip
    assert res.error_counts[res.errors[3]] == 2
    stored = _errors(store)
    assert set(stored) == set(res.errors) and len(stored) == 5
    for e in stored:
        assert e.startswith("endpoint http://127.0.0.1:9/v1 model 'm1': generation failed (")
        assert "retried on the next run" in e and _one_line(e)
    lines = str(res).splitlines()
    assert lines[0].startswith("6 cells: 0 cached, 1 generated, 5 failed")
    assert lines[1:4] == [f"  error (1 cell): {e}" for e in res.errors[:3]]
    assert lines[4] == "  ... and 1 more distinct error (all in generations.error of the store)"
    assert str(JobResult(run_id="r", planned=1, done=1)) == (
        "1 cells: 0 cached, 1 generated, 0 failed (run r)"
    )


# -- chat_format: checked before anything is stored; part of the key -------------------------


def test_unknown_chat_format_is_refused_before_anything_is_stored(
    store: Store, tmp_path: Path
) -> None:
    _task(store)
    tiny = write_gguf(tmp_path / "tiny.gguf", [("general.architecture", 8, "llama")], TENSORS)
    before = {t: store.count(t) for t in ("generations", "runs", "models")}
    with pytest.raises(SlamkitError, match=r"chat_format must be one of auto, chatml, gemma-tu"):
        run_sweep(store, [tiny], "t", chat_format="chatlm", progress=False)
    with pytest.raises(SlamkitError, match=r"chat_format\['tiny.gguf'\] must be one of .*'x'"):
        run_sweep(store, [tiny], "t", chat_format={"tiny.gguf": "x"}, progress=False)
    with pytest.raises(SlamkitError, match=r"names 'other.gguf', which is none of .*\(tiny.gguf\)"):
        run_sweep(store, [tiny], "t", chat_format={"other.gguf": "chatml"}, progress=False)
    assert {t: store.count(t) for t in before} == before


def test_explicit_chat_format_changes_the_key_and_auto_keeps_it(tmp_path: Path) -> None:
    tiny = inspect_gguf(
        write_gguf(
            tmp_path / "tiny.gguf",
            [("general.architecture", 8, "llama"), ("tokenizer.chat_template", 8, "{{ x }}")],
            TENSORS,
        )
    )
    items = [("i1", "Hello")]
    auto = plan_cells(tiny, "t", items, None, [SMALL], 1, 0)
    msgs = [{"role": "user", "content": "Hello"}]
    # the key of a default ("auto") cell is what it was before chat_format existed
    assert auto[0].key == generation_key(
        tiny.model_id, "t", "i1", msgs, "gguf-template", SMALL.as_dict(), 0, 0
    )
    assert plan_cells(tiny, "t", items, None, [SMALL], 1, 0, chat_format="auto") == auto
    chatml = plan_cells(tiny, "t", items, None, [SMALL], 1, 0, chat_format="chatml")
    assert chatml[0].key != auto[0].key
    assert chatml[0].key == generation_key(
        tiny.model_id, "t", "i1", msgs, planned_chat_format(True, "llama", "chatml"),
        SMALL.as_dict(), 0, 0,
    )  # fmt: skip
    # an explicit format that is also the automatic fallback is the same cell
    assert planned_chat_format(False, "gemma3", "gemma-turns") == planned_chat_format(
        False, "gemma3"
    )
    assert set(FALLBACK_TEMPLATES) == {"chatml", "gemma-turns", "plain"}


# -- GGUFs llama.cpp refuses ---------------------------------------------------------------------


def test_unknown_architecture_names_it_in_every_row_and_the_summary(
    store: Store, tmp_path: Path
) -> None:
    _task(store)
    xyz = write_gguf(tmp_path / "xyz.gguf", [("general.architecture", 8, "xyz")], TENSORS)
    res = run_sweep(store, [xyz], "t", SMALL, progress=False)
    assert (res.generated, res.failed) == (0, 2)
    stored = _errors(store)
    assert len(stored) == 2 and len(set(stored)) == 1 and res.errors == stored[:1]
    e = stored[0]
    assert e.startswith("xyz.gguf: llama.cpp (llama-cpp-python 0.3.36) cannot load architecture")
    assert "'xyz'" in e and "use a GGUF of an architecture it supports (llama, gemma3" in e
    assert _one_line(e) and f"  error (2 cells): {e}" in str(res).splitlines()
    assert store.count("generations", "text IS NOT NULL") == 0


def test_llama_cpp_reason_for_a_failed_load_is_captured(store: Store, tmp_path: Path) -> None:
    """llama-cpp-python with verbose=False says only "Failed to load model from file"; the
    row carries llama.cpp's own reason from its log."""
    _task(store, 1)
    bare = write_gguf(tmp_path / "bare.gguf", [("general.architecture", 8, "llama")], TENSORS)
    res = run_sweep(store, [bare], "t", SMALL, progress=False)
    (e,) = _errors(store)
    assert e.startswith("bare.gguf: llama.cpp could not load the model (")
    assert "key not found in model: llama.context_length" in e
    assert "slamkit catalog --path" in e and "bare.gguf" in e and _one_line(e)
    assert res.errors == [e]


def test_cli_run_prints_the_error_of_a_failing_model(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        _task(st)
    xyz = write_gguf(tmp_path / "xyz.gguf", [("general.architecture", 8, "xyz")], TENSORS)
    cmd = [sys.executable, "-m", "slamkit.cli", "--store", str(db), "run", "--task", "t",
           "--model", str(xyz), "--max-tokens", "4", "--quiet"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0, out.stdout + out.stderr
    assert "2 failed" in out.stdout
    assert "xyz.gguf: llama.cpp (llama-cpp-python 0.3.36) cannot load architecture 'xyz'" in (
        out.stdout + out.stderr
    )
    assert "Traceback" not in out.stderr
    with Store(db) as st:
        assert st.count("generations", "error LIKE 'xyz.gguf: %'") == 2


# -- an OpenAI-compatible endpoint that answers garbage or too late ----------------------------

SLEEP_S = 2.0  # how long the "slow" server waits (bounded: the handler returns by itself)
TIMEOUT_S = 0.5


def _sse(*events: dict) -> bytes:
    return ("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n").encode()


def _chunk(content: str | None, finish: str | None = None) -> dict:
    delta = {"content": content} if content is not None else {}
    return {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip


ANSWERS: dict[str, tuple[bytes, str]] = {
    "good": (_sse(_chunk("Hello"), _chunk(" there"), _chunk(None, "stop")), "text/event-stream"),
    "html": (b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"),
    "bytes": (b"\xff\xfe\x00\x81\x9fgarbage\xc3\x28", "application/octet-stream"),
    "sse-bytes": (b"data: \xff\xfe\x81\n\n", "text/event-stream"),
    "nochoices": (b'{"id": "x", "object": "chat.completion", "created": 0}', "application/json"),
    "broken": (
        b'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
        b'data: {"id": "x", "choi',
        "text/event-stream",
    ),
    "whole": (
        json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "All at once"},
                    }
                ],
                "usage": {"prompt_tokens": 5, "completion_tokens": 3},
            }
        ).encode(),
        "application/json",
    ),  # fmt: skip
}


class GarbageHandler(BaseHTTPRequestHandler):
    mode = "good"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        if self.mode == "slow":
            time.sleep(SLEEP_S)  # longer than the client's timeout
            body, ctype = ANSWERS["good"]
        else:
            body, ctype = ANSWERS[self.mode]
        try:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout)


@pytest.fixture()
def garbage_server() -> Iterator[tuple[str, type[GarbageHandler]]]:
    handler = type("H", (GarbageHandler,), {"mode": "good"})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", handler
    srv.shutdown()
    srv.server_close()


GARBAGE = {  # mode -> what the message must show of the answer
    "html": "HTTP 200 text/html, no chat completion in the answer: '<html><body><h1>Welcome to ng",
    "bytes": "HTTP 200 application/octet-stream, not UTF-8: 'garbage ('",
    "sse-bytes": "HTTP 200 text/event-stream, not UTF-8: 'data:'",
    "nochoices": 'no chat completion in the answer: \'{"id": "x", "object": "chat.completion"',
}


@pytest.mark.parametrize("mode", sorted(GARBAGE))
def test_endpoint_garbage_is_a_readable_error(garbage_server, mode: str) -> None:
    url, handler = garbage_server
    handler.mode = mode
    be = OpenAIBackend("m", base_url=url, max_retries=0, timeout=10)
    with pytest.raises(BackendError) as err:
        be.generate([{"role": "user", "content": "hi"}], SMALL, seed=0)
    msg = str(err.value)
    assert msg.startswith(f"endpoint {url} model 'm': the server answered something that is not")
    assert GARBAGE[mode] in msg, msg
    assert msg.endswith("check that --base-url (base_url=) points at an OpenAI-compatible /v1 "
                        "endpoint.")  # fmt: skip
    assert _one_line(msg) and err.value.__cause__ is None
    be.close()


def test_endpoint_stream_that_breaks_off_is_not_stored_as_an_answer(garbage_server) -> None:
    url, handler = garbage_server
    handler.mode = "broken"
    be = OpenAIBackend("m", base_url=url, max_retries=0, timeout=10)
    with pytest.raises(BackendError, match="the answer stream broke off before the server fin"):
        be.generate([{"role": "user", "content": "hi"}], SMALL, seed=0)
    handler.mode = "whole"  # a server that ignores stream=True still gives its answer
    res = be.generate([{"role": "user", "content": "hi"}], SMALL, seed=0)
    assert (res.text, res.finish_reason, res.completion_tokens) == ("All at once", "stop", 3)
    be.close()


def test_endpoint_sweep_stores_readable_reasons_and_keeps_good_rows(
    store: Store, garbage_server
) -> None:
    url, handler = garbage_server
    _task(store)
    good = EndpointModel("good-model", url)
    run_sweep(store, [good], "t", SMALL, progress=False)
    kept = store.df("SELECT gen_key, text FROM generations ORDER BY gen_key")
    assert kept["text"].tolist() == ["Hello there"] * 2

    model = EndpointModel("m", url)
    handler.mode = "bytes"  # the issue's case: a bare UnicodeDecodeError used to be stored
    res = run_sweep(store, [model], "t", SMALL, progress=False)
    assert (res.generated, res.failed) == (0, 2)
    stored = _errors(store)
    assert len(stored) == 2 and len(res.errors) == 1
    for e in stored:
        assert e.startswith(f"endpoint {url} model 'm': the server answered something that is")
        assert "not UTF-8: 'garbage ('" in e and "--base-url" in e and _one_line(e)
        assert not e.startswith("UnicodeDecodeError")
    assert f"  error (2 cells): {stored[0]}" in str(res)

    handler.mode = "good"  # the server is fixed: the error rows are replaced, none added
    again = run_sweep(store, [model], "t", SMALL, progress=False)
    assert (again.generated, again.failed, again.errors) == (2, 0, [])
    assert store.count("generations") == 4 and store.count("generations", "error IS NOT NULL") == 0
    after = store.df("SELECT gen_key, text FROM generations ORDER BY gen_key")
    assert set(map(tuple, kept.values.tolist())) <= set(map(tuple, after.values.tolist()))


def test_endpoint_timeout_is_recorded_with_the_limit(store: Store, garbage_server) -> None:
    url, handler = garbage_server
    handler.mode = "slow"
    _task(store, 1)
    res = run_sweep(store, [EndpointModel("m", url, timeout=TIMEOUT_S)], "t", SMALL, progress=False)
    assert res.failed == 1
    (e,) = _errors(store)
    assert e.startswith(f"endpoint {url} model 'm': no answer within 0.5 s (timeout; APITimeout")
    assert "3 attempts" in e and e.endswith(
        "raise --timeout (timeout=) or check the server's load."
    )
    assert _one_line(e) and res.errors == [e]


# -- real models: chat templates that cannot be used, and the explicit chat format ------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("evil", "the GGUF's chat template was blocked for safety: it tries attribute access "
                 "'__init__', which the Jinja sandbox forbids (SecurityError: access to "
                 "attribute '__init__' of 'list' object is unsafe)"),
        ("badsyntax", "the GGUF's chat template is not valid Jinja (TemplateSyntaxError: "
                      "unexpected '}' on line 1)"),
    ],
)  # fmt: skip
def test_unusable_chat_template_names_model_cause_and_fix(
    templated: dict[str, Path], tmp_path: Path, name: str, cause: str
) -> None:
    path = templated[name]
    with Store(tmp_path / "s.duckdb") as st:
        _task(st)
        res = run_sweep(st, [path], "t", SMALL, n_threads=1, progress=False)
        assert (res.generated, res.failed) == (0, 2)
        stored = _errors(st)
        assert len(stored) == 2 and len(set(stored)) == 1 and res.errors == stored[:1]
        e = stored[0]
        assert e.startswith(f"{name}.gguf: {cause} — pass an explicit chat format"), e
        assert '--chat-format chatml / chat_format="chatml"' in e and _one_line(e)
        assert f"  error (2 cells): {e}" in str(res)

        # the fix the message gives works: the same file generates with ChatML
        fixed = run_sweep(st, [path], "t", SMALL, n_threads=1, chat_format="chatml", progress=False)
        assert (fixed.generated, fixed.failed) == (2, 0)
        ok = st.df("SELECT text, chat_format FROM generations WHERE error IS NULL")
        assert len(ok) == 2 and ok["text"].str.len().gt(0).all()
        assert ok["chat_format"].str.startswith("fallback:chatml:").all()
        # a mapping naming the file gives the same cells: nothing new to generate
        same = run_sweep(
            st, [path], "t", SMALL, n_threads=1, chat_format={f"{name}.gguf": "chatml"},
            progress=False,
        )  # fmt: skip
        assert (same.cached, same.model_calls) == (2, 0)
        assert st.count("generations") == 4  # the two error rows of the GGUF template stay


@pytest.mark.slow
def test_template_failing_on_a_conversation_is_explained_per_cell(
    templated: dict[str, Path], tmp_path: Path
) -> None:
    with Store(tmp_path / "s.duckdb") as st:
        _task(st, system_prompt="Be brief.")
        res = run_sweep(st, [templated["nosystem"]], "t", SMALL, n_threads=1, progress=False)
        assert (res.generated, res.failed) == (0, 2)
        (e,) = res.errors
        assert e.startswith(
            "nosystem.gguf: the GGUF's chat template fails on this conversation (ValueError: "
            "System role not supported) — pass an explicit chat format"
        ), e
        assert _one_line(e) and set(_errors(st)) == {e}
        fixed = run_sweep(
            st, [templated["nosystem"]], "t", SMALL, n_threads=1, chat_format="chatml",
            progress=False,
        )  # fmt: skip
        assert (fixed.generated, fixed.failed) == (2, 0)


@pytest.mark.slow
def test_cli_run_prints_the_blocked_template(templated: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    with Store(db) as st:
        _task(st)
    cmd = [sys.executable, "-m", "slamkit.cli", "--store", str(db), "run", "--task", "t",
           "--model", str(templated["evil"]), "--max-tokens", "4", "--threads", "1",
           "--quiet"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    text = out.stdout + out.stderr
    assert "evil.gguf: the GGUF's chat template was blocked for safety" in text, text
    assert "--chat-format chatml" in text
