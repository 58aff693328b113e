"""The variant matrix: quantization drift, raw speed and reproducibility per variant.

Three resumable jobs on the engine, each storing one table (migration ``m008``):

* :func:`run_drift` (:mod:`slamkit.matrix.drift`) — KL divergence, same-top-1 share and
  probability change of a variant against a base GGUF (its parent by default), with
  llama.cpp's ``llama-perplexity`` conventions; table ``drift``;
* :func:`run_speed` (:mod:`slamkit.matrix.speed`) — ``llama-bench``-style prompt
  processing and generation tokens/s (mean +- sd over repetitions), load time and peak
  memory; table ``speed``;
* :func:`run_repro` (:mod:`slamkit.matrix.repro`) — stored generation cells re-run k
  times, across thread counts and executors, compared byte for byte; table ``repro``.

``frames.variant_matrix`` puts them beside quality, latency and license in one table,
``charts.drift_quality`` draws it (notebook 07 and the report).
"""

from __future__ import annotations

from slamkit.matrix.drift import TextSet, reference_text_set, run_drift
from slamkit.matrix.repro import run_repro
from slamkit.matrix.speed import run_speed

__all__ = ["TextSet", "reference_text_set", "run_drift", "run_repro", "run_speed"]
