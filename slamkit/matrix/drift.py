"""Quantization drift: how far a variant's next-token distributions move from a base model.

The figures are those of ``llama-perplexity --kl-divergence-base`` / ``--kl-divergence``
(llama.cpp ``tools/perplexity/perplexity.cpp``), computed here through llama-cpp-python so
they are comparable:

* the text set is tokenized once (by the base model) and cut into windows of ``n_ctx``
  tokens; at most ``n_chunks`` of them are evaluated, **spread evenly over the text** (the
  first, the last and evenly between, so a text set of several references is sampled
  across all of them; llama-perplexity takes the first ``n_chunks`` — with every window,
  ``n_chunks=None``, both agree). Each chunk is evaluated from an empty KV cache (its
  first token replaced by BOS when the model adds one) and only the **second half** is
  scored: the logits at positions ``n_ctx // 2 ... n_ctx - 2``, each predicting the next
  token;
* per scored token: ``KL(base || variant) = sum_v p_base(v) (log p_base(v) - log p_var(v))``
  (nats; log-softmax in float64), whether both models put the same token on top
  ("same top-1"), the change in probability of the base model's top token
  (``delta_p_top``) and, as llama.cpp reports it, of the actual next token (``delta_p``);
* over the tokens: mean KLD; its 95% interval from the **chunk-level (batch-means)**
  standard error — the sd of the chunks' mean KLDs over ``sqrt(chunks)``, mean +- t(chunks - 1)
  s.e. (tokens within a text are autocorrelated, so the per-token s.e. is too
  narrow; NaN with one chunk) — and, for comparison with llama.cpp, its per-token s.e.
  ``sqrt((E[k^2] - E[k]^2) / (n - 1))`` (``kld_se_token``); median, p90, p99, max,
  same-top-1 share with ``sqrt(p (1 - p) / (n - 1))``, and both perplexities.

llama.cpp's published KLD figures are usually at ``n_ctx`` 512 (``--n-ctx 512``); the
default here (128) is a fast check, not comparable with them.

Unlike llama.cpp, which stores the base's log-probabilities as 16-bit integers and skips
entries below ``exp(-16)``, slamkit caches the base model's **raw float32 logits** (what
llama.cpp computed) and sums over the whole vocabulary, so a model compared with itself
gives exactly 0. The cache lives under ``<slamkit cache>/drift/`` keyed by the base file's
sha256, the text's sha256, ``n_ctx``, the chunks and the llama-cpp-python version
(vocabulary x scored tokens x 4 bytes: ~12 MB per 64 scored tokens of SmolLM2's
49,152-token vocabulary). The variant's logits are compared chunk by chunk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slamkit import engine
from slamkit.backends.base import check_whole
from slamkit.catalog import ModelInfo, cache_dir
from slamkit.engine import Group, JobResult, JobSpec
from slamkit.errors import MatrixError, VocabularyMismatchError
from slamkit.keys import content_key
from slamkit.matrix.models import NoResource, resolve_model
from slamkit.store import Store, jobs

__all__ = [
    "DRIFT_VERSION", "TextSet", "check_same_vocabulary", "drift_pairs", "drift_summary",
    "log_softmax", "reference_text_set", "run_drift", "token_drift",
]  # fmt: skip

#: bump when the figures change for the same inputs (old rows are then computed again)
DRIFT_VERSION = 2
#: z of a two-sided 95% interval
Z95 = 1.959963984540054


@dataclass(frozen=True)
class TextSet:
    """The text drift is measured on: a name (shown and stored) and the text itself."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        """sha256 of the UTF-8 text (part of every drift key).

        >>> TextSet("t", "abc").sha256[:8]
        'ba7816bf'
        """
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def reference_text_set(
    store: Store,
    task_id: str = "alpaca_eval",
    source_model: str | None = None,
    limit: int | None = 10,
) -> TextSet:
    """The default text set: the task's reference answers (first ``limit`` items, one
    answer each, joined by blank lines). MatrixError when the task has none."""
    texts = jobs.reference_texts(store, task_id, source_model, limit)
    if not texts:
        src = f" from {source_model!r}" if source_model else ""
        raise MatrixError(
            f"No reference texts for task {task_id!r}{src} in {store.path}: import references "
            "first (slamkit refs alpaca-eval --limit 10), or pass your own text "
            "(texts=TextSet(name, text) / slamkit drift --text-file F.txt)."
        )
    return TextSet(f"{task_id}/{source_model or 'any'}:{len(texts)} references", "\n\n".join(texts))


# -- the pure part: logits in, figures out ---------------------------------------------------
def log_softmax(logits: Any) -> np.ndarray:
    """Row-wise log-softmax in float64 (stable: the row's max is subtracted first).

    >>> np.round(np.exp(log_softmax([[0.0, 0.0]])), 3).tolist()
    [[0.5, 0.5]]
    """
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))  # type: ignore[no-any-return]


def token_drift(base_logits: Any, logits: Any, next_tokens: Any) -> dict[str, np.ndarray]:
    """Per scored token (one row of logits each, the same vocabulary on both sides):
    ``kld``, ``same_top1`` (bool), ``delta_p_top``, ``delta_p``, ``nll``, ``nll_base``.

    >>> out = token_drift([[0.0, 1.0]], [[0.0, 1.0]], [1])
    >>> float(out["kld"][0]), bool(out["same_top1"][0])
    (0.0, True)
    """
    b = log_softmax(np.atleast_2d(base_logits))
    q = log_softmax(np.atleast_2d(logits))
    if b.shape != q.shape:
        raise VocabularyMismatchError(
            f"logits of shape {q.shape} cannot be compared with the base's {b.shape}: the "
            "variant and the base must score the same tokens with the same vocabulary."
        )
    nxt = np.asarray(next_tokens, dtype=np.int64)
    rows = np.arange(b.shape[0])
    p_b = np.exp(b)
    with np.errstate(invalid="ignore"):
        kld = np.where(p_b > 0, p_b * (b - q), 0.0).sum(axis=-1)
    top_b, top_q = b.argmax(axis=-1), q.argmax(axis=-1)
    return {
        "kld": kld,
        "same_top1": top_b == top_q,
        "delta_p_top": np.exp(q[rows, top_b]) - np.exp(b[rows, top_b]),
        "delta_p": np.exp(q[rows, nxt]) - np.exp(b[rows, nxt]),
        "nll": -q[rows, nxt],
        "nll_base": -b[rows, nxt],
    }


def _se(values: np.ndarray) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mean = float(values.mean())
    return float(np.sqrt(max(float((values**2).mean()) - mean * mean, 0.0) / (n - 1)))


def chunk_se(values: np.ndarray, n_chunks: int) -> float:
    """Batch-means standard error of the mean of ``values``: they are ``n_chunks``
    equal-sized consecutive chunks; the sd of the chunk means over ``sqrt(n_chunks)``
    (NaN below 2 chunks).

    >>> chunk_se(np.array([0.0, 0.0, 1.0, 1.0]), 2)
    0.5
    """
    if n_chunks < 2 or values.size % n_chunks:
        return float("nan")
    means = values.reshape(n_chunks, -1).mean(axis=1)
    return float(means.std(ddof=1) / np.sqrt(n_chunks))


def drift_summary(per_token: dict[str, np.ndarray], n_chunks: int = 1) -> dict[str, Any]:
    """The stored figures of :func:`token_drift`'s arrays over ``n_chunks`` equal-sized
    chunks (see the module docstring).

    >>> s = drift_summary(token_drift([[0.0, 1.0], [1.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]], [1, 0]))
    >>> s["n_tokens"], s["kld_mean"], s["same_top1"]
    (2, 0.0, 1.0)
    """
    from scipy.stats import t as student_t

    kld = np.asarray(per_token["kld"], dtype=np.float64)
    if kld.size == 0:
        raise MatrixError("no token was scored: the text set is shorter than one context.")
    same = np.asarray(per_token["same_top1"], dtype=np.float64)
    mean, se = float(kld.mean()), chunk_se(kld, n_chunks)
    z = float(student_t.ppf(0.975, n_chunks - 1)) if n_chunks >= 2 else float("nan")
    p = float(same.mean())
    n = int(kld.size)
    dp = np.asarray(per_token["delta_p"], dtype=np.float64)
    p50, p90, p99 = (float(v) for v in np.percentile(kld, [50, 90, 99]))
    return {
        "n_tokens": n,
        "kld_mean": mean,
        "kld_se": se,
        "kld_se_token": _se(kld),
        "kld_lo": max(0.0, mean - z * se) if se == se else float("nan"),
        "kld_hi": mean + z * se if se == se else float("nan"),
        "kld_median": p50,
        "kld_p90": p90,
        "kld_p99": p99,
        "kld_max": float(kld.max()),
        "same_top1": p,
        "same_top1_se": float(np.sqrt(p * (1 - p) / (n - 1))) if n > 1 else float("nan"),
        "delta_p_top": float(np.mean(per_token["delta_p_top"])),
        "delta_p": float(dp.mean()),
        "delta_p_rms": float(np.sqrt((dp**2).mean())),
        "ppl_model": float(np.exp(np.mean(per_token["nll"]))),
        "ppl_base": float(np.exp(np.mean(per_token["nll_base"]))),
    }


def chunk_tokens(tokens: Sequence[int], n_ctx: int, n_chunks: int | None) -> np.ndarray:
    """``(chunks, n_ctx)`` token ids: windows of the text, cut as llama-perplexity cuts
    them; at most ``n_chunks`` of them (None = every whole window), spread evenly over the
    text (the first, the last, evenly between).

    >>> chunk_tokens(range(10), 4, None).tolist()
    [[0, 1, 2, 3], [4, 5, 6, 7]]
    >>> chunk_tokens(range(14), 2, 3).tolist()
    [[0, 1], [6, 7], [12, 13]]
    """
    available = len(tokens) // n_ctx
    n = available if n_chunks is None else min(n_chunks, available)
    if n < 1:
        raise MatrixError(
            f"the text set has {len(tokens)} tokens, fewer than one context of {n_ctx}: "
            "lower n_ctx (--n-ctx) or use more text (more items, or --text-file)."
        )
    windows = np.asarray(tokens[: available * n_ctx], dtype=np.int32).reshape(available, n_ctx)
    if n == available:
        return windows
    picked = np.unique(np.linspace(0, available - 1, n).round().astype(int))
    return windows[picked]


def scored_targets(chunks: np.ndarray) -> np.ndarray:
    """The next tokens the scored logits predict: ``chunk[first + 1:]`` of every chunk,
    ``first = n_ctx // 2`` (llama-perplexity's second half)."""
    first = chunks.shape[1] // 2
    return chunks[:, first + 1 :].reshape(-1)


# -- vocabularies ------------------------------------------------------------------------------
def _vocabulary(model: ModelInfo) -> list[str]:
    from slamkit.gguf import read_gguf

    tokens = read_gguf(model.path, check_data=False).metadata.get("tokenizer.ggml.tokens")
    return [str(t) for t in tokens] if isinstance(tokens, list) else []


def check_same_vocabulary(variant: ModelInfo, base: ModelInfo) -> None:
    """VocabularyMismatchError naming both models unless their GGUFs list the same tokens
    (read from the headers, nothing is loaded)."""
    if variant.sha256 == base.sha256:
        return
    a, b = _vocabulary(variant), _vocabulary(base)
    if a == b and a:
        return
    if len(a) != len(b):
        detail = f"{len(a):,} vs {len(b):,} tokens"
    else:
        i = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), 0)
        detail = f"same size ({len(a):,} tokens) but token {i} is {a[i]!r} vs {b[i]!r}"
    raise VocabularyMismatchError(
        f"drift of {variant.name} against {base.name}: the vocabularies differ ({detail}). "
        "KL divergence compares next-token distributions token by token, so the base must "
        "share the variant's vocabulary: use its parent (the default) or another variant of "
        "the same model."
    )


# -- running llama.cpp ---------------------------------------------------------------------
class _Evaluator:
    """One GGUF loaded with ``logits_all`` for a context of ``n_ctx`` tokens."""

    def __init__(self, model: ModelInfo, n_ctx: int, n_threads: int | None) -> None:
        import llama_cpp

        from slamkit.backends.llamacpp import check_model_path, default_threads

        check_model_path(Path(model.path))
        self.name = model.name
        threads = n_threads or default_threads()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(model.path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                logits_all=True, n_threads=threads, n_threads_batch=threads, verbose=False,
            )  # fmt: skip
        except Exception as exc:  # llama.cpp says little: name the file and the fix
            raise MatrixError(
                f"{model.name} ({Path(model.path).name}): llama.cpp could not load it for drift "
                f"({type(exc).__name__}: {exc}) — check the file with `slamkit catalog --path "
                f"{model.path}`."
            ) from exc
        vocab = self.llm._model.vocab
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab))
        self.bos = int(self.llm.token_bos())
        self.n_vocab = int(self.llm.n_vocab())

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def chunk_logits(self, chunk: np.ndarray) -> np.ndarray:
        """float32 logits of the second half of one chunk, ``(scored tokens, n_vocab)``."""
        first = chunk.shape[0] // 2
        ids = [int(t) for t in chunk]
        if self.add_bos:
            ids[0] = self.bos
        self.llm.reset()  # empty KV cache: every chunk on its own, as llama-perplexity
        self.llm.eval(ids)
        return np.array(self.llm.scores[first : chunk.shape[0] - 1], dtype=np.float32)

    def scored_logits(self, chunks: np.ndarray) -> np.ndarray:
        """float32 logits of the second half of every chunk, ``(scored tokens, n_vocab)``."""
        return np.concatenate([self.chunk_logits(c) for c in chunks], axis=0)

    def close(self) -> None:
        self.llm.close()


def _cache_path(
    base: ModelInfo, text: TextSet, n_ctx: int, n_chunks: int | None, cache: Any
) -> Path:
    from importlib.metadata import version

    key = content_key(
        "drift-base", v=DRIFT_VERSION, base=base.sha256, text=text.sha256, n_ctx=n_ctx,
        n_chunks=n_chunks, llama_cpp_python=version("llama_cpp_python"),
    )  # fmt: skip
    return cache_dir(cache) / "drift" / f"{key}.npz"


def base_logits(
    base: ModelInfo,
    text: TextSet,
    n_ctx: int,
    n_chunks: int | None,
    n_threads: int | None = None,
    cache: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(chunks, logits)`` of the base model on ``text``: computed once, then read from
    the cache (``<slamkit cache>/drift/<key>.npz``; written atomically)."""
    path = _cache_path(base, text, n_ctx, n_chunks, cache)
    if path.exists():
        try:
            with np.load(path) as data:
                chunks, logits = data["chunks"], data["logits"]
            first = n_ctx // 2
            if logits.shape[0] == chunks.shape[0] * (n_ctx - 1 - first):
                return chunks, logits
        except (OSError, ValueError, KeyError):  # a damaged cache file is computed again
            pass
    ev = _Evaluator(base, n_ctx, n_threads)
    try:
        chunks = chunk_tokens(ev.tokenize(text.text), n_ctx, n_chunks)
        logits = ev.scored_logits(chunks)
    finally:
        ev.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez(tmp, chunks=chunks, logits=logits)
        os.replace(tmp, path)
    finally:  # a failed (or interrupted) save leaves no partial file behind
        tmp.unlink(missing_ok=True)
    return chunks, logits


def _remove_stale(path: Path) -> None:
    """Remove temporary saves of ``path`` left by processes that no longer run (killed
    mid-save)."""
    for old in path.parent.glob(f".{path.stem}.*.tmp.npz"):
        try:
            pid = int(old.name.split(".")[-3])
            os.kill(pid, 0)  # still running: its save is under way
        except (ValueError, ProcessLookupError):
            old.unlink(missing_ok=True)
        except OSError:  # not ours to signal: leave it
            pass


def check_text(base: ModelInfo, text: TextSet, n_ctx: int, n_chunks: int | None) -> None:
    """MatrixError unless ``text`` holds at least one window of ``n_ctx`` tokens of the
    base's tokenizer (its vocabulary only is loaded: fast, before anything is measured)."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # no weights, no context: what Llama.tokenize uses, quietly
    try:
        vocab = LlamaModel(path_model=str(base.path), params=params, verbose=False)
    except Exception as exc:
        raise MatrixError(
            f"{base.name} ({Path(base.path).name}): llama.cpp could not read its vocabulary "
            f"({type(exc).__name__}: {exc}) — check the file with `slamkit catalog --path "
            f"{base.path}`."
        ) from exc
    try:
        tokens = vocab.tokenize(text.text.encode("utf-8"), add_bos=False, special=False)
    finally:
        vocab.close()
    try:
        chunk_tokens(tokens, n_ctx, n_chunks)
    except MatrixError as exc:
        raise MatrixError(f"drift text set {text.name!r} (base {base.name}): {exc}") from exc


# -- the job -----------------------------------------------------------------------------
@dataclass
class DriftCell:
    """One drift figure set to compute: a variant against a base on a text set."""

    key: str
    variant: ModelInfo
    base: ModelInfo


def drift_pairs(
    store: Store,
    variants: Sequence[str | Path | ModelInfo] | None = None,
    base: str | Path | ModelInfo | None = None,
) -> list[tuple[ModelInfo, ModelInfo]]:
    """``(variant, base)`` pairs: by default every registered GGUF model with a registered
    parent, against that parent; ``variants`` (names or paths) against ``base`` (None: each
    one's parent). Vocabularies are checked here, before anything runs."""
    registered = jobs.matrix_models(store)
    parents = dict(zip(registered["model_id"], registered["parent_model_id"], strict=True))
    by_id = dict(zip(registered["model_id"], registered["name"], strict=True))
    if variants is None:
        variants = [
            n for n, mid in zip(registered["name"], registered["model_id"], strict=True)
            if parents.get(mid) in by_id
        ]  # fmt: skip
    pairs = []
    fixed = resolve_model(store, base, registered) if base is not None else None
    for ref in variants:
        v = resolve_model(store, ref, registered)
        b = fixed
        if b is None:
            parent = parents.get(v.sha256)
            if parent not in by_id:
                raise MatrixError(
                    f"{v.name} has no parent registered in {store.path}: pass the base to "
                    "compare it with (base= / slamkit drift --base NAME_OR_PATH)."
                )
            b = resolve_model(store, by_id[parent], registered)
        check_same_vocabulary(v, b)
        pairs.append((v, b))
    return pairs


def run_drift(
    store: Store,
    variants: Sequence[str | Path | ModelInfo] | None = None,
    base: str | Path | ModelInfo | None = None,
    *,
    texts: TextSet | None = None,
    task_id: str = "alpaca_eval",
    reference_model: str | None = None,
    n_items: int | None = 10,
    n_ctx: int = 128,
    n_chunks: int | None = 4,
    n_threads: int | None = None,
    cache: str | Path | None = None,
    backend: str = "llamacpp",
    progress: bool = True,
) -> JobResult:
    """Measure and store the drift of ``variants`` against ``base`` (see the module
    docstring); by default every registered variant against its parent, on the task's
    first ``n_items`` reference answers, in chunks of ``n_ctx`` tokens (at most
    ``n_chunks``). Resumable: a pair already stored for the same text and settings is
    skipped. ``backend="mock"`` (the notebooks' dry run) loads nothing and stores nothing.

    >>> run_drift(store)  # doctest: +SKIP
    """
    check_whole("n_ctx", n_ctx, 8, "tokens per chunk, e.g. 128")
    if n_chunks is not None:
        check_whole("n_chunks", n_chunks, 1, "None = every whole window of the text")
    if n_threads is not None:
        check_whole("n_threads", n_threads, 1, "None = half the logical cores")
    result = JobResult("drift")
    if backend == "mock":
        return result
    pairs = drift_pairs(store, variants, base)
    if not pairs:
        return result
    text = texts or reference_text_set(store, task_id, reference_model, n_items)
    cells = []
    for v, b in pairs:
        key = content_key(
            "drift", v=DRIFT_VERSION, model=v.sha256, base=b.sha256, text=text.sha256,
            n_ctx=n_ctx, n_chunks=n_chunks,
        )  # fmt: skip
        cells.append(DriftCell(key, v, b))
    cells = list({c.key: c for c in cells}.values())
    done = jobs.stored_matrix_keys(store, "drift", "drift_key", [c.key for c in cells])
    todo = [c for c in cells if c.key not in done]
    for b in {c.base.sha256: c.base for c in todo}.values():  # a too-short text fails here,
        if not _cache_path(b, text, n_ctx, n_chunks, cache).exists():  # before any load
            check_text(b, text, n_ctx, n_chunks)

    def row(cell: DriftCell) -> dict[str, Any]:
        return {
            "drift_key": cell.key, "model_id": cell.variant.sha256,
            "base_model_id": cell.base.sha256, "text_set": text.name,
            "text_sha256": text.sha256, "n_ctx": n_ctx, "chunks_asked": n_chunks,
            "n_threads": n_threads,
        }  # fmt: skip

    def call(_: Any, batch: list[DriftCell]) -> list[dict[str, Any]]:
        (cell,) = batch
        out = row(cell)
        try:
            chunks, base = base_logits(cell.base, text, n_ctx, n_chunks, n_threads, cache)
            per = n_ctx - 1 - n_ctx // 2  # scored tokens per chunk
            parts: list[dict[str, np.ndarray]] = []
            ev = _Evaluator(cell.variant, n_ctx, n_threads)
            try:  # chunk by chunk: one chunk's logits in float64 at a time
                for i, chunk in enumerate(chunks):
                    parts.append(token_drift(
                        base[i * per : (i + 1) * per], ev.chunk_logits(chunk),
                        scored_targets(chunks[i : i + 1]),
                    ))  # fmt: skip
            finally:
                ev.close()
            merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            out.update(drift_summary(merged, int(chunks.shape[0])))
            out["n_chunks"] = int(chunks.shape[0])
        except Exception as exc:  # stored with the cell, retried on the next run
            out["error"] = _message(cell, exc)
        return [out]

    def fail(cell: DriftCell, exc: BaseException, stage: str) -> dict[str, Any]:
        return {**row(cell), "error": _message(cell, exc)}

    groups = [
        Group(c.variant.name, [c], lambda _p: NoResource(), call, fail) for c in todo
    ]  # fmt: skip
    spec = JobSpec(
        "drift", "drift", "drift_key", "drift", unit="pair", run_column=True,
        run={"n_threads": n_threads, "params": {
            "text_set": text.name, "text_sha256": text.sha256, "n_ctx": n_ctx,
            "n_chunks": n_chunks, "pairs": [[v.name, b.name] for v, b in pairs],
        }},
    )  # fmt: skip
    return engine.run(
        store, spec, groups, engine.SequentialExecutor(), planned=len(cells),
        cached=len(cells) - len(todo), progress=progress,
    )  # fmt: skip


def _message(cell: DriftCell, exc: BaseException) -> str:
    from slamkit.backends.llamacpp import one_line

    text = one_line(str(exc), 500)
    if isinstance(exc, MatrixError):
        return text
    return (
        f"drift of {cell.variant.name} against {cell.base.name} failed "
        f"({type(exc).__name__}: {text}) — the pair is retried on the next run."
    )
