"""In-process llama.cpp backend (llama-cpp-python): CPU by default, GPU with n_gpu_layers."""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from slamkit.backends.base import GenerationResult, Sampling
from slamkit.errors import BackendError, ModelNotFoundError

# OpenMP spin-waiting collapses decode speed on small shared machines (see README).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: Explicit chat formats for GGUFs that carry no chat template (e.g. Gemma base models).
FALLBACK_TEMPLATES: dict[str, str] = {
    # Gemma's documented turn format; a system message is folded into the first user turn.
    "gemma-turns": (
        "{{ bos_token }}{% set sys = namespace(text='') %}"
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{% set sys.text = m['content'] + '\n\n' %}{% else %}"
        "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
        "{% if loop.index0 <= 1 %}{{ sys.text }}{% endif %}{{ m['content'] }}<end_of_turn>\n"
        "{% endif %}{% endfor %}<start_of_turn>model{{ '\\n' }}"
    ),
    # Plain text: system, then the user's message, then an empty line for the answer.
    "plain": ("{{ bos_token }}{% for m in messages %}{{ m['content'] }}\n\n{% endfor %}"),
    # ChatML (SmolLM2, Qwen, ...): for a GGUF whose own template cannot be used.
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}<|im_start|>assistant{{ '\\n' }}"
    ),
}
FALLBACK_STOPS: dict[str, list[str]] = {
    "gemma-turns": ["<end_of_turn>"],
    "plain": [],
    "chatml": ["<|im_end|>"],
}
#: what ``chat_format=`` accepts: "auto" (the GGUF's template, else a fallback by
#: architecture) or the name of one of slamkit's explicit formats
CHAT_FORMATS: tuple[str, ...] = ("auto", *sorted(FALLBACK_TEMPLATES))
#: examples named when llama.cpp does not know a GGUF's architecture
KNOWN_ARCHITECTURES = "llama, gemma3, qwen2, qwen3, phi3, mistral"


def default_threads() -> int:
    """Half the logical cores (at least 1): decode is memory-bound and 2 threads on a
    2-core machine with any other load collapsed to ~1 token/s here."""
    return max(1, (os.cpu_count() or 2) // 2)


def fallback_for(architecture: str | None) -> str:
    """The explicit fallback chat format for an architecture without a GGUF template."""
    return "gemma-turns" if architecture and architecture.startswith("gemma") else "plain"


def check_chat_format(chat_format: object, where: str = "chat_format") -> str:
    """``chat_format`` if slamkit knows it, else SlamkitError naming it and the choices.

    >>> check_chat_format("chatml")
    'chatml'
    """
    if not isinstance(chat_format, str) or chat_format not in CHAT_FORMATS:
        raise BackendError(
            f"{where} must be one of {', '.join(CHAT_FORMATS)}, got {chat_format!r} "
            "('auto' = the GGUF's own chat template, else a fallback by architecture)."
        )
    return chat_format


def planned_chat_format(
    has_chat_template: bool, architecture: str | None, chat_format: str = "auto"
) -> str:
    """The chat format a model will use (known before loading it; part of the cell key).

    ``chat_format="auto"`` uses the GGUF's template, else a fallback by architecture; an
    explicit name (e.g. ``"chatml"``) always uses that slamkit template. Any slamkit
    template is recorded as ``fallback:<name>:<hash of its text>``, so editing one
    regenerates, and the same template gives the same cells however it was chosen.

    >>> planned_chat_format(True, "llama")
    'gguf-template'
    >>> planned_chat_format(True, "llama", "chatml").startswith("fallback:chatml:")
    True
    """
    check_chat_format(chat_format)
    if chat_format != "auto":
        return _fallback_label(chat_format)
    if has_chat_template:
        return "gguf-template"
    return _fallback_label(fallback_for(architecture))


def fit_prompt(
    prompt: Any, messages: list[dict[str, str]], n_ctx: int, max_tokens: int, label: str
) -> tuple[list[int], set[int], list[str], int]:
    """``(prompt tokens, stop ids, stop strings, tokens left to generate)`` of ``messages``
    in a context of ``n_ctx`` tokens; BackendError naming the model when it does not fit."""
    tokens, stop_ids, stops = prompt.tokens(messages)
    if len(tokens) + 1 >= n_ctx:
        raise BackendError(
            f"{label}: the prompt of {len(tokens)} tokens does not fit the context of "
            f"{n_ctx} tokens — raise n_ctx (--n-ctx) or shorten the item."
        )
    return tokens, stop_ids, stops, min(max_tokens, n_ctx - len(tokens))


def check_model_path(path: Path) -> None:
    """ModelNotFoundError saying what to do when the GGUF ``path`` does not exist."""
    if not path.exists():
        raise ModelNotFoundError(
            f"Model file {path} does not exist. Check the path, or list the available "
            "models with `slamkit catalog`."
        )


def gguf_label(path: str | Path, name: str | None = None) -> str:
    """How messages name a GGUF model: its file name, and its catalog name if different.

    >>> gguf_label("/m/evil.gguf", "evil"), gguf_label("/m/a.gguf", "SmolLM2")
    ('evil.gguf', 'SmolLM2 (a.gguf)')
    """
    fname = Path(path).name
    if not name or name in (fname, fname.removesuffix(".gguf")):
        return fname
    return f"{name} ({fname})"


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line (whitespace runs become one space), cut to ``limit`` chars.

    >>> one_line("a   b" + "c" * 10, limit=8)
    'a bcc...'
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def _fallback_label(name: str) -> str:
    digest = hashlib.sha256(FALLBACK_TEMPLATES[name].encode()).hexdigest()[:8]
    return f"fallback:{name}:{digest}"


def template_message(label: str, exc: Exception, suggest: str) -> str:
    """``<model>: the GGUF's chat template ... — pass an explicit chat format`` (one line)."""
    import jinja2
    from jinja2.sandbox import SecurityError

    fix = (
        "pass an explicit chat format instead of the GGUF's template, e.g. "
        f'--chat-format {suggest} / chat_format="{suggest}" '
        f"(one of {', '.join(sorted(FALLBACK_TEMPLATES))})"
    )
    detail = f"{type(exc).__name__}: {one_line(str(exc), 160).rstrip('.')}"
    if isinstance(exc, SecurityError):
        attr = re.search(r"attribute '([^']*)'", str(exc))
        what = f": it tries attribute access '{attr.group(1)}'" if attr else ""
        cause = (
            f"the GGUF's chat template was blocked for safety{what}, which the Jinja "
            "sandbox forbids"
        )
    elif isinstance(exc, jinja2.TemplateSyntaxError):
        line = f" on line {exc.lineno}" if exc.lineno else ""
        detail = f"{type(exc).__name__}: {one_line(exc.message or str(exc), 160)}{line}"
        cause = "the GGUF's chat template is not valid Jinja"
    else:
        cause = "the GGUF's chat template fails on this conversation"
    return f"{label}: {cause} ({detail}) — {fix}."


class ChatPrompt:
    """One GGUF's chat format over its vocabulary: messages -> prompt tokens and stops
    (:meth:`tokens`), generated tokens -> text with those stops applied (:meth:`completion`).

    Shared by every executor of a GGUF, so they all send the same prompt tokens and cut
    the same text: ``llm`` is a ``llama_cpp.Llama`` with its weights (the in-process
    backend) or with ``vocab_only=True`` (the server backend, which needs no weights here).
    ``chat_format="auto"`` uses the GGUF's template, else a fallback by architecture; an
    explicit name uses that slamkit template. Errors are one-line BackendErrors naming
    ``label``.
    """

    def __init__(self, llm: Any, label: str, chat_format: str = "auto") -> None:
        self.llm = llm
        self.label = label
        try:
            self._setup(chat_format)
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(
                f"{label}: cannot set up the chat format "
                f"({type(exc).__name__}: {one_line(str(exc), 160)}) — pass an explicit "
                f"chat format, one of {', '.join(sorted(FALLBACK_TEMPLATES))}."
            ) from exc

    def _setup(self, chat_format: str) -> None:
        meta = self.llm.metadata
        template = meta.get("tokenizer.chat_template")
        model = self.llm._model
        eos_id = model.token_eos()
        bos_id = model.token_bos()
        eos = model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = model.token_get_text(bos_id) if bos_id != -1 else ""
        # a blank template counts as none, as in the catalog (planned_chat_format)
        if chat_format == "auto" and template and template.strip():
            self.chat_format = "gguf-template"
            stops: list[str] = []
        else:
            arch = meta.get("general.architecture")
            fmt = fallback_for(arch) if chat_format == "auto" else chat_format
            template = FALLBACK_TEMPLATES[fmt]
            self.chat_format = _fallback_label(fmt)
            stops = FALLBACK_STOPS[fmt]
        import jinja2
        from llama_cpp import llama_chat_format

        try:
            self.formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
            )
            self.extra_stops = stops
            if self.chat_format == "gguf-template":
                # fail at load, once, rather than in every cell: the simplest conversation
                self.formatter(messages=[{"role": "user", "content": "Hello"}])
        except (jinja2.TemplateError, TypeError, ValueError) as exc:
            if self.chat_format != "gguf-template":
                raise
            raise BackendError(template_message(self.label, exc, self.suggested_format())) from exc

    def suggested_format(self) -> str:
        """The explicit format most likely right for this model's tokens."""
        arch = self.llm.metadata.get("general.architecture")
        if arch and arch.startswith("gemma"):
            return "gemma-turns"
        ids = self.llm.tokenize(b"<|im_start|>", add_bos=False, special=True)
        return "chatml" if len(ids) == 1 else "plain"

    def format(self, messages: list[dict[str, str]]) -> tuple[list[int], set[int], list[str]]:
        """Prompt tokens, stop token ids and stop strings for ``messages``."""
        res = self.formatter(messages=messages)  # type: ignore[arg-type]
        tokens = self.llm.tokenize(
            res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True
        )
        stops = res.stop if isinstance(res.stop, list) else ([res.stop] if res.stop else [])
        stop_ids: set[int] = set()
        text_stops: list[str] = []
        for s in stops + self.extra_stops:
            if not s:
                continue
            ids = self.llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
            if len(ids) == 1:
                stop_ids.add(ids[0])  # a special token such as <end_of_turn>
            else:
                text_stops.append(s)
        return tokens, stop_ids, text_stops

    def tokens(self, messages: list[dict[str, str]]) -> tuple[list[int], set[int], list[str]]:
        """:meth:`format`, with a GGUF template failing on this conversation explained."""
        try:
            return self.format(messages)
        except Exception as exc:
            import jinja2

            if self.chat_format != "gguf-template" or not isinstance(
                exc, (jinja2.TemplateError, TypeError, ValueError)
            ):
                raise
            raise BackendError(template_message(self.label, exc, self.suggested_format())) from exc

    def completion(
        self, prompt_tokens: list[int], stop_ids: set[int], stops: list[str]
    ) -> Completion:
        """An empty :class:`Completion` of ``prompt_tokens`` to feed generated tokens to."""
        return Completion(self.llm, prompt_tokens, stop_ids, stops)


class Completion:
    """Generated tokens -> text, with the stops of :meth:`ChatPrompt.format` applied.

    Fed one token at a time (:meth:`add`), in the order llama.cpp samples them: a stop
    token or an end-of-generation token ends it and is not kept; a stop string ends it
    and is cut off with whatever follows it. :attr:`text` is the answer, decoded by the
    GGUF's own detokenizer after the prompt (so a leading space is what the model wrote).
    """

    def __init__(
        self, llm: Any, prompt_tokens: list[int], stop_ids: set[int], stops: list[str]
    ) -> None:
        import llama_cpp

        self._llm = llm
        self._is_eog = llama_cpp.llama_vocab_is_eog
        self._prompt = prompt_tokens
        self._stop_ids = stop_ids
        self._stops = stops
        self._text = ""
        self.tokens: list[int] = []
        #: "stop" once a stop (token or string) ended it, else "length"
        self.finish = "length"
        #: the token that ended it is an end-of-generation token of the vocabulary
        self.eog = False

    def add(self, token: int) -> bool:
        """Take the next generated token; True when generation must stop here."""
        eog = bool(self._is_eog(self._llm._model.vocab, token))
        if eog or token in self._stop_ids:
            self.eog = eog
            self.finish = "stop"
            return True
        self.tokens.append(token)
        if self._stops:
            text = self._decode("ignore")
            hit = min((text.find(s) for s in self._stops if s in text), default=-1)
            self._text = text
            if hit >= 0:
                self._text = text[:hit]
                self.finish = "stop"
                return True
        return False

    def _decode(self, errors: str) -> str:
        raw = self._llm.detokenize(self.tokens, prev_tokens=self._prompt)
        return str(raw.decode("utf-8", errors))

    @property
    def text(self) -> str:
        """The answer so far (cut at a stop string once one was seen)."""
        if self.finish != "stop" or not self._stops:
            return self._decode("replace")
        return self._text


class LlamaCppBackend:
    """Load one GGUF in this process; ``close()`` frees model, context and batch.

    The GGUF's own chat template formats the messages; a model without one uses an
    explicit fallback (``chat_format="auto"`` picks by architecture, recorded per row).
    ``chat_format="chatml"`` (or another name in :data:`CHAT_FORMATS`) uses that slamkit
    template instead of the GGUF's, e.g. for a GGUF whose template is broken or blocked.
    Each call starts from an empty KV cache, so prefill timings are comparable and
    greedy output is reproducible byte for byte.

    Every error names the model file, says the cause in words and what to do, on one
    line: an architecture llama.cpp does not know, llama.cpp's own reason for a failed
    load (captured from its log, which ``verbose=False`` hides), a chat template that is
    not valid Jinja or that the Jinja sandbox blocks.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_gpu_layers: int = 0,
        chat_format: str = "auto",
        name: str | None = None,
    ) -> None:
        path = Path(path)
        self.label = gguf_label(path, name)
        check_chat_format(chat_format, f"chat_format of {self.label}")
        check_model_path(path)
        import jinja2
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._rss_before_load = _rss_mb()
        self.path = path
        self.name = name or path.stem
        self.n_threads = n_threads or default_threads()
        self.n_threads_batch = n_threads_batch or self.n_threads
        self.n_gpu_layers = n_gpu_layers
        if n_gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            # CI and most laptops: degrade cleanly to CPU, and say so in the row.
            self.n_gpu_layers = 0
        t0 = time.perf_counter()
        log: list[tuple[int, str]] = []
        # llama-cpp-python compiles every chat template of the GGUF while it loads; with an
        # explicit chat format slamkit never uses them, so a broken one must not stop it
        tolerant = _tolerant_gguf_templates() if chat_format != "auto" else nullcontext()
        try:
            with _LOAD_LOCK, _capture_llama_log(log), tolerant:
                self.llm = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads_batch,
                    n_gpu_layers=self.n_gpu_layers,
                    verbose=False,
                )
        except jinja2.TemplateError as exc:
            raise BackendError(self._template_message(exc, _suggest_from_header(path))) from exc
        except Exception as exc:  # llama.cpp gives ValueError with little detail
            raise BackendError(self._load_message(exc, log)) from exc
        self.load_time_s: float | None = time.perf_counter() - t0
        self.n_ctx = n_ctx

        try:
            self._setup_chat_format(chat_format)
        except Exception:
            self.close()  # never leave a loaded model behind
            raise
        self._rss_peak = _rss_mb()

    # -- messages ------------------------------------------------------------------------
    def _load_message(self, exc: Exception, log: list[tuple[int, str]]) -> str:
        """``<model>: <llama.cpp's reason> — <what to do>`` for a failed load."""
        lines = [text.strip() for _, text in log if text.strip()]
        text = "\n".join(lines)
        arch = re.search(r"unknown model architecture: '([^']*)'", text)
        version = getattr(self._llama_cpp, "__version__", "?")
        if arch:
            return (
                f"{self.label}: llama.cpp (llama-cpp-python {version}) cannot load "
                f"architecture '{arch.group(1)}' — use a GGUF of an architecture it "
                f"supports ({KNOWN_ARCHITECTURES}, ...) or a newer llama-cpp-python."
            )
        reason = next(
            (m.group(1) for ln in lines if (m := re.search(r"error loading model: (.*)", ln))),
            None,
        )
        if reason is None:
            errors = [
                ln for ln in lines if re.search(r"\b(error|failed|cannot|unable)\b", ln, re.I)
            ]
            reason = errors[0] if errors else f"{type(exc).__name__}: {exc}"
        if re.search(r"alloc|out of memory|\bOOM\b", reason, re.I):
            hint = "not enough memory: free memory, lower n_ctx (--n-ctx) or n_gpu_layers"
        else:
            hint = (
                f"check the file with `slamkit catalog --path {self.path}`; a file that is "
                "damaged or cut short must be fetched or converted again"
            )
        reason = one_line(reason, 200).rstrip(".")
        return f"{self.label}: llama.cpp could not load the model ({reason}) — {hint}."

    def _template_message(self, exc: Exception, suggest: str) -> str:
        """``<model>: the GGUF's chat template ... — pass an explicit chat format``."""
        return template_message(self.label, exc, suggest)

    def _suggested_format(self) -> str:
        """The explicit format most likely right for this model's tokens."""
        return self.prompt.suggested_format()

    def _setup_chat_format(self, chat_format: str) -> None:
        self.prompt = ChatPrompt(self.llm, self.label, chat_format)
        self.chat_format = self.prompt.chat_format

    @property
    def _formatter(self) -> Any:
        """The Jinja chat formatter of :attr:`prompt` (what tests inspect)."""
        return self.prompt.formatter

    # ------------------------------------------------------------------
    def format(self, messages: list[dict[str, str]]) -> tuple[list[int], set[int], list[str]]:
        """Prompt tokens, stop token ids and stop strings for ``messages``."""
        return self.prompt.format(messages)

    def generate(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int
    ) -> GenerationResult:
        lc = self._llama_cpp
        llm = self.llm
        t0 = time.perf_counter()
        prompt_tokens, stop_ids, stops, max_tokens = fit_prompt(
            self.prompt, messages, self.n_ctx, sampling.max_tokens, self.label
        )
        llm.reset()  # empty KV cache: full prefill every call, reproducible greedy text
        lc.llama_perf_context_reset(llm.ctx)
        llm.set_seed(seed)
        done = self.prompt.completion(prompt_tokens, stop_ids, stops)
        ttft = None
        for token in llm.generate(
            prompt_tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=0.0,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
        ):
            if ttft is None:
                ttft = time.perf_counter() - t0
            if done.add(token) or len(done.tokens) >= max_tokens:
                break
        text = done.text
        latency = time.perf_counter() - t0
        perf = lc.llama_perf_context(llm.ctx)
        self._rss_peak = max(self._rss_peak, _rss_mb())
        return GenerationResult(
            text=text,
            prompt_tokens=len(prompt_tokens),
            completion_tokens=len(done.tokens),
            ttft_s=ttft,
            prefill_tps=_rate(perf.n_p_eval, perf.t_p_eval_ms),
            decode_tps=_rate(perf.n_eval, perf.t_eval_ms),
            latency_s=latency,
            finish_reason=done.finish,
            chat_format=self.chat_format,
            extra={
                "n_p_eval": perf.n_p_eval,
                "n_eval": perf.n_eval,
                "t_p_eval_ms": perf.t_p_eval_ms,
                "t_eval_ms": perf.t_eval_ms,
                "peak_rss_mb": self._rss_peak,
                "model_mem_mb": self._rss_peak - self._rss_before_load,
            },
        )

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None  # type: ignore[assignment]

    def __enter__(self) -> LlamaCppBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: llama.cpp's log callback and llama-cpp-python's template classes are process-wide
_LOAD_LOCK = threading.Lock()


@contextmanager
def _capture_llama_log(lines: list[tuple[int, str]]) -> Iterator[None]:
    """Collect llama.cpp's log lines (level, text) while loading: with ``verbose=False``
    llama-cpp-python sends them to /dev/null, and its exception says only "Failed to load
    model from file". The library's own callback is restored afterwards."""
    import llama_cpp
    from llama_cpp import _logger

    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator,misc]
    def record(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append((level, text.decode("utf-8", "replace")))

    llama_cpp.llama_log_set(record, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@contextmanager
def _tolerant_gguf_templates() -> Iterator[None]:
    """While a model loads, a GGUF chat template that is not valid Jinja compiles to an
    empty one instead of raising (llama-cpp-python compiles them all in ``Llama()``;
    slamkit formats with its own formatter, so those compiled copies go unused)."""
    import jinja2
    from llama_cpp import llama_chat_format

    real = llama_chat_format.Jinja2ChatFormatter

    class Tolerant(real):  # type: ignore[misc,valid-type]
        def __init__(self, template: str, *args: Any, **kwargs: Any) -> None:
            try:
                super().__init__(template, *args, **kwargs)
            except jinja2.TemplateError:
                super().__init__("", *args, **kwargs)

    llama_chat_format.Jinja2ChatFormatter = Tolerant  # type: ignore[misc]
    try:
        yield
    finally:
        llama_chat_format.Jinja2ChatFormatter = real  # type: ignore[misc]


def _suggest_from_header(path: Path) -> str:
    """The explicit chat format to suggest for a GGUF not loaded (read from its header)."""
    from slamkit.gguf import read_gguf

    try:
        meta = read_gguf(path).metadata
    except Exception:  # the message about the template matters more than this hint
        return "chatml"
    arch = meta.get("general.architecture")
    if isinstance(arch, str) and arch.startswith("gemma"):
        return "gemma-turns"
    tokens = meta.get("tokenizer.ggml.tokens") or []
    return "chatml" if "<|im_start|>" in tokens else "plain"


def _rate(n: int, ms: float) -> float | None:
    return n / (ms / 1000.0) if n > 0 and ms > 0 else None


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def llama_cpp_info() -> dict[str, Any]:
    """Versions and build of the llama.cpp behind llama-cpp-python (for provenance)."""
    import llama_cpp

    info: dict[str, Any] = {"llama_cpp_python": llama_cpp.__version__}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode()
    except Exception:  # pragma: no cover - older builds
        info["system_info"] = None
    info["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
    return info
