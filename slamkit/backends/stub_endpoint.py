"""A fast, scripted OpenAI-compatible endpoint on 127.0.0.1 (asyncio, standard library).

For what needs an endpoint but no model: the load generator's own benchmark (a no-op
endpoint that answers at once, so what is measured is the client), the mock dry run of
the notebooks (``backend: mock``) and fast tests. Not a model: every answer is the first
``reply_words`` words of the last user message (or ``reply``), one streamed chunk per
word, usage counted in words.

Serves ``POST /v1/chat/completions`` (streamed as server-sent events with chunked
transfer encoding, or whole), ``GET /v1/models`` and ``GET /health``, with HTTP/1.1
keep-alive. ``first_token_s`` waits before the first chunk, ``token_s`` between chunks
(both 0: a no-op endpoint). It runs its own event loop in a daemon thread:

>>> with StubEndpoint(reply="hello there") as ep:  # doctest: +SKIP
...     ep.base_url
'http://127.0.0.1:40123/v1'
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any


class StubEndpoint:
    """See the module docstring. ``requests`` counts chat requests answered."""

    def __init__(
        self,
        *,
        reply: str | None = None,
        reply_words: int = 8,
        first_token_s: float = 0.0,
        token_s: float = 0.0,
        model: str = "stub",
        port: int = 0,
    ) -> None:
        self.reply = reply
        self.reply_words = reply_words
        self.first_token_s = first_token_s
        self.token_s = token_s
        self.model = model
        self.port = port
        self.requests = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> StubEndpoint:
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=1024)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # e.g. the port is taken
                failure.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=serve, name="slamkit-stub-endpoint", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def close(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            return

        async def shut() -> None:
            server.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shut(), loop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = self._server = None

    def __enter__(self) -> StubEndpoint:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP --------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                if method == "POST" and path.rstrip("/").endswith("/chat/completions"):
                    await self._chat(body, writer)
                elif method == "GET" and path.rstrip("/").endswith("/models"):
                    _whole(writer, 200, {"object": "list", "data": [{"id": self.model}]})
                elif method == "GET" and path.rstrip("/").endswith("/health"):
                    _whole(writer, 200, {"status": "ok"})
                else:
                    _whole(writer, 404, {"error": {"message": f"no route {method} {path}"}})
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except ValueError:  # an unreadable request line or body
            _whole(writer, 400, {"error": {"message": "bad request"}})
        finally:
            try:
                writer.close()
            except Exception:
                pass

    def _words(self, request: dict[str, Any]) -> list[str]:
        if self.reply is not None:
            words = self.reply.split()
        else:
            user = ""
            for m in request.get("messages") or []:
                if isinstance(m, dict) and m.get("role") == "user":
                    user = str(m.get("content") or "")
            words = user.split()[: self.reply_words] or ["ok"]
        limit = request.get("max_tokens")
        return words[: int(limit)] if isinstance(limit, int) and limit > 0 else words

    async def _chat(self, body: bytes, writer: asyncio.StreamWriter) -> None:
        request = json.loads(body or b"{}")
        self.requests += 1
        all_words = self._words({**request, "max_tokens": None})
        words = self._words(request)
        finish = "length" if len(words) < len(all_words) else "stop"
        usage = {"prompt_tokens": 8, "completion_tokens": len(words),
                 "total_tokens": 8 + len(words)}  # fmt: skip
        created = int(time.time())
        if self.first_token_s:
            await asyncio.sleep(self.first_token_s)
        if not request.get("stream"):
            _whole(writer, 200, {
                "id": "stub", "object": "chat.completion", "created": created,
                "model": self.model, "usage": usage,
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": " ".join(words)}}],
            })  # fmt: skip
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
        )
        for i, word in enumerate(words):
            if i and self.token_s:
                await writer.drain()
                await asyncio.sleep(self.token_s)
            delta = {"content": word if i == 0 else " " + word}
            _event(writer, _chunk(created, self.model, delta, None))
        _event(writer, _chunk(created, self.model, {}, finish))
        if (request.get("stream_options") or {}).get("include_usage"):
            _event(writer, {"id": "stub", "object": "chat.completion.chunk", "created": created,
                            "model": self.model, "choices": [], "usage": usage})  # fmt: skip
        _send_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")


def _chunk(created: int, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "stub", "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }  # fmt: skip


def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%s\r\n" % (len(data), data))


def _event(writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
    _send_chunk(writer, b"data: " + json.dumps(payload).encode() + b"\n\n")


def _whole(writer: asyncio.StreamWriter, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\nconnection: keep-alive\r\n\r\n".encode()
        + data
    )
