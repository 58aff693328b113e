"""Cosine similarity to the reference with embeddings from llama.cpp (embedding mode).

Default embedder: SmolLM2-135M-Instruct Q4_1 (``slamkit.catalog.smollm2_path()``), mean
pooled, 576 dimensions. Its limits, stated plainly: it is a small *generative* model, not
a trained sentence embedder, so mean-pooled hidden states capture topic and wording more
than meaning; unrelated texts already score high (often 0.6-0.9), so compare models by
differences in this metric, not by its absolute level. Texts longer than the context
(``n_ctx``, default 512 tokens) are truncated. Cost: single-threaded prefill on a shared
2-core machine ran at ~45 tokens/s, i.e. ~10 s per 500-token reference; each distinct text
is embedded once per scoring call (cached in memory). Point ``model_path`` at a real embedding GGUF
(e.g. a nomic-embed or bge model) for a better semantic signal; the file is checked to be a
GGUF (:func:`slamkit.metrics.check_embedder`) before llama.cpp loads it.

Empty texts: an empty (or whitespace-only) output or reference scores 0.0 with
``{"empty_output": true}`` / ``{"empty_reference": true}`` in the details; it is never
embedded (version 1 embedded it as ``" "``, which scored ~0.86 against real references).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from slamkit.catalog import file_sha256
from slamkit.metrics.base import Details, ItemMetric


def cosine(u: list[float], v: list[float]) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros).

    >>> cosine([1, 0], [1, 1])  # doctest: +ELLIPSIS
    0.7071...
    """
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(b * b for b in v))
    return dot / (nu * nv) if nu and nv else 0.0


class EmbeddingCosine(ItemMetric):
    """Cosine similarity in [-1, 1] between mean-pooled llama.cpp embeddings.

    The metric name carries the embedder's file name (``embed_cosine:<stem>``) so scores
    from different embedders never mix. Threads default to 1 (see ENVIRONMENT.md).
    """

    base_name = "embed_cosine"
    version = "2"  # 2: empty outputs/references score 0.0 (were embedded as " ")

    def __init__(
        self,
        model_path: str | Path | None = None,
        n_ctx: int = 512,
        n_threads: int = 1,
        n_threads_batch: int = 1,
        **kwargs: Any,
    ) -> None:
        if model_path is None:
            from slamkit.catalog import smollm2_path

            model_path = smollm2_path()
        from slamkit.metrics.registry import check_embedder

        self.model_path = check_embedder(model_path, "embed_cosine model_path")
        self.n_ctx, self.n_threads, self.n_threads_batch = n_ctx, n_threads, n_threads_batch
        self._llm: Any = None
        self._cache: dict[str, list[float]] = {}
        self._sha: str | None = None
        super().__init__(label=self.model_path.stem, **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        if self._sha is None:
            self._sha = file_sha256(self.model_path)  # computed once, cached
        return {"model_sha256": self._sha, "n_ctx": self.n_ctx, "pooling": "mean"}

    def _model(self) -> Any:
        if self._llm is None:
            from slamkit.errors import require

            llama_cpp: Any = require("llama_cpp", "llama-cpp-python")
            self._llm = llama_cpp.Llama(
                str(self.model_path),
                embedding=True,
                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                n_ctx=self.n_ctx,
                n_batch=self.n_ctx,
                n_ubatch=self.n_ctx,
                n_threads=self.n_threads,
                n_threads_batch=self.n_threads_batch,
                verbose=False,
            )
        return self._llm

    def embed(self, texts: list[str]) -> list[list[float]]:
        """One mean-pooled vector per text (texts over ``n_ctx`` tokens are truncated).

        An empty or whitespace-only text gets the zero vector (cosine 0.0 to anything).
        """
        llm = self._model()
        out = []
        for t in texts:  # one text per call keeps each sequence within one ubatch
            if t not in self._cache:
                if len(self._cache) > 20_000:
                    self._cache.clear()
                empty = not (t or "").strip()
                vec = [0.0] * int(llm.n_embd()) if empty else llm.embed(t, truncate=True)
                self._cache[t] = list(vec)
            out.append(self._cache[t])
        return out

    def score_batch(
        self, predictions: list[str], references: list[str | None]
    ) -> list[tuple[float | None, Details]]:
        # compute() has already taken out empty texts (ItemMetric.score_empty)
        unique = list(dict.fromkeys([*predictions, *(r or "" for r in references)]))
        vecs = dict(zip(unique, self.embed(unique), strict=True))
        return [
            (cosine(vecs[p], vecs[r or ""]), None)
            for p, r in zip(predictions, references, strict=True)
        ]

    def score_one(self, prediction: str, reference: str | None) -> tuple[float | None, Details]:
        return self.score_batch([prediction], [reference])[0]

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        self._cache.clear()
