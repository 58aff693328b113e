"""In-process llama.cpp backend (llama-cpp-python): CPU by default, GPU with n_gpu_layers."""

from __future__ import annotations

import hashlib
import os
import time
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
}
FALLBACK_STOPS: dict[str, list[str]] = {"gemma-turns": ["<end_of_turn>"], "plain": []}


def default_threads() -> int:
    """Half the logical cores (at least 1): decode is memory-bound and 2 threads on a
    2-core machine with any other load collapsed to ~1 token/s here."""
    return max(1, (os.cpu_count() or 2) // 2)


def fallback_for(architecture: str | None) -> str:
    """The explicit fallback chat format for an architecture without a GGUF template."""
    return "gemma-turns" if architecture and architecture.startswith("gemma") else "plain"


def planned_chat_format(has_chat_template: bool, architecture: str | None) -> str:
    """The chat format a model will use (known before loading it; part of the cell key).

    A fallback carries a hash of its template text, so editing a fallback regenerates.
    """
    if has_chat_template:
        return "gguf-template"
    return _fallback_label(fallback_for(architecture))


def _fallback_label(name: str) -> str:
    digest = hashlib.sha256(FALLBACK_TEMPLATES[name].encode()).hexdigest()[:8]
    return f"fallback:{name}:{digest}"


class LlamaCppBackend:
    """Load one GGUF in this process; ``close()`` frees model, context and batch.

    The GGUF's own chat template formats the messages; a model without one uses an
    explicit fallback (``chat_format="auto"`` picks by architecture, recorded per row).
    Each call starts from an empty KV cache, so prefill timings are comparable and
    greedy output is reproducible byte for byte.
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
        if not path.exists():
            raise ModelNotFoundError(
                f"Model file {path} does not exist. Check the path, or list the available "
                "models with `slamkit catalog`."
            )
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
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch,
                n_gpu_layers=self.n_gpu_layers,
                verbose=False,
            )
        except Exception as exc:  # llama.cpp gives ValueError with little detail
            raise BackendError(
                f"llama.cpp could not load {path}: {exc}. Check the file with "
                f"`slamkit catalog --path {path}`."
            ) from exc
        self.load_time_s: float | None = time.perf_counter() - t0
        self.n_ctx = n_ctx

        try:
            self._setup_chat_format(chat_format)
        except Exception as exc:
            self.close()  # never leave a loaded model behind
            raise BackendError(
                f"Cannot set up the chat format of {path}: {exc}. Pass chat_format= one of "
                f"{sorted(FALLBACK_TEMPLATES)} to use an explicit format instead."
            ) from exc
        self._rss_peak = _rss_mb()

    def _setup_chat_format(self, chat_format: str) -> None:
        meta = self.llm.metadata
        template = meta.get("tokenizer.chat_template")
        model = self.llm._model
        eos_id = model.token_eos()
        bos_id = model.token_bos()
        eos = model.token_get_text(eos_id) if eos_id != -1 else ""
        bos = model.token_get_text(bos_id) if bos_id != -1 else ""
        if chat_format == "auto" and template:
            self.chat_format = "gguf-template"
            stops: list[str] = []
        else:
            arch = meta.get("general.architecture")
            fmt = fallback_for(arch) if chat_format == "auto" else chat_format
            if fmt not in FALLBACK_TEMPLATES:
                raise BackendError(
                    f"Unknown chat_format {chat_format!r} for {self.name}; use 'auto' or one "
                    f"of {sorted(FALLBACK_TEMPLATES)}."
                )
            template = FALLBACK_TEMPLATES[fmt]
            self.chat_format = _fallback_label(fmt)
            stops = FALLBACK_STOPS[fmt]
        from llama_cpp import llama_chat_format

        self._formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=eos, bos_token=bos, stop_token_ids=[eos_id]
        )
        self._extra_stops = stops

    # ------------------------------------------------------------------
    def format(self, messages: list[dict[str, str]]) -> tuple[list[int], set[int], list[str]]:
        """Prompt tokens, stop token ids and stop strings for ``messages``."""
        res = self._formatter(messages=messages)  # type: ignore[arg-type]
        tokens = self.llm.tokenize(
            res.prompt.encode("utf-8"), add_bos=not res.added_special, special=True
        )
        stops = res.stop if isinstance(res.stop, list) else ([res.stop] if res.stop else [])
        stop_ids: set[int] = set()
        text_stops: list[str] = []
        for s in stops + self._extra_stops:
            if not s:
                continue
            ids = self.llm.tokenize(s.encode("utf-8"), add_bos=False, special=True)
            if len(ids) == 1:
                stop_ids.add(ids[0])  # a special token such as <end_of_turn>
            else:
                text_stops.append(s)
        return tokens, stop_ids, text_stops

    def generate(
        self, messages: list[dict[str, str]], sampling: Sampling, seed: int
    ) -> GenerationResult:
        lc = self._llama_cpp
        llm = self.llm
        t0 = time.perf_counter()
        prompt_tokens, stop_ids, stops = self.format(messages)
        if len(prompt_tokens) + 1 >= self.n_ctx:
            raise BackendError(
                f"Prompt of {len(prompt_tokens)} tokens does not fit the context of "
                f"{self.n_ctx} for {self.name}; raise n_ctx or shorten the item."
            )
        max_tokens = min(sampling.max_tokens, self.n_ctx - len(prompt_tokens))
        llm.reset()  # empty KV cache: full prefill every call, reproducible greedy text
        lc.llama_perf_context_reset(llm.ctx)
        llm.set_seed(seed)
        out: list[int] = []
        ttft = None
        finish = "length"
        text = ""
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
            if token in stop_ids or lc.llama_vocab_is_eog(llm._model.vocab, token):
                finish = "stop"
                break
            out.append(token)
            if stops:
                text = llm.detokenize(out, prev_tokens=prompt_tokens).decode("utf-8", "ignore")
                hit = min((text.find(s) for s in stops if s in text), default=-1)
                if hit >= 0:
                    text = text[:hit]
                    finish = "stop"
                    break
            if len(out) >= max_tokens:
                break
        if finish != "stop" or not stops:
            text = llm.detokenize(out, prev_tokens=prompt_tokens).decode("utf-8", "replace")
        latency = time.perf_counter() - t0
        perf = lc.llama_perf_context(llm.ctx)
        self._rss_peak = max(self._rss_peak, _rss_mb())
        return GenerationResult(
            text=text,
            prompt_tokens=len(prompt_tokens),
            completion_tokens=len(out),
            ttft_s=ttft,
            prefill_tps=_rate(perf.n_p_eval, perf.t_p_eval_ms),
            decode_tps=_rate(perf.n_eval, perf.t_eval_ms),
            latency_s=latency,
            finish_reason=finish,
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
