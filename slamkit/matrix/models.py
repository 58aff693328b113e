"""What the matrix jobs share: naming a model by catalog name or path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slamkit.catalog import ModelInfo, inspect_gguf
from slamkit.errors import MatrixError
from slamkit.store import Store


def resolve_model(store: Store, ref: str | Path | ModelInfo, registered: Any) -> ModelInfo:
    """The catalog entry of ``ref``: a ModelInfo, a name registered in ``store``
    (``registered``: :func:`slamkit.store.jobs.matrix_models`), or a GGUF path."""
    if isinstance(ref, ModelInfo):
        return ref
    by_name = dict(zip(registered["name"], registered["path"], strict=True))
    path = by_name.get(str(ref), ref)
    if not Path(path).exists():
        raise MatrixError(
            f"{ref!r} is neither a model registered in {store.path} nor a GGUF file; "
            f"registered: {sorted(by_name)}."
        )
    info = inspect_gguf(path)
    name = next((n for n, p in by_name.items() if Path(p) == Path(path)), None)
    if name:
        info.name = name
    return info


class NoResource:
    """The resource of a matrix group whose calls load their own models."""

    def close(self) -> None:
        pass
