"""Backends: in-process llama.cpp and OpenAI-compatible HTTP, behind one interface."""

from slamkit.backends.base import Backend, GenerationResult, Sampling

__all__ = ["Backend", "GenerationResult", "Sampling"]
