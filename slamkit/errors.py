"""One exception root for everything slamkit raises on purpose.

Every message names the file, row, model or parameter at fault and says what to do.
"""

from __future__ import annotations


class SlamkitError(Exception):
    """Base class: catch this to handle any error slamkit raises deliberately."""


class GGUFError(SlamkitError):
    """A file is not a readable GGUF model (wrong magic, truncated, corrupt)."""


class ModelNotFoundError(SlamkitError):
    """A model path or catalog name does not exist."""


class StoreError(SlamkitError):
    """The DuckDB store cannot be opened or migrated."""


class StoreLockedError(StoreError):
    """Another process holds the store open for writing (DuckDB allows one writer)."""


class StoreDamagedError(StoreError):
    """The store file is truncated or damaged (DuckDB found a bad checksum or short read)."""


class StoreVersionError(StoreError):
    """The store was written by a newer slamkit (or DuckDB): migrations this one lacks."""


class StoreFullError(StoreError):
    """No space left on the device holding the store; the failed write was rolled back."""


class StoreReadOnlyError(StoreError):
    """The store cannot be written: read-only file system, no permission, or read_only."""


class ReferenceImportError(SlamkitError):
    """A reference file or one of its rows cannot be imported."""


class PreferenceImportError(SlamkitError):
    """A human-preference file, one of its records or one of its fields cannot be imported."""


class TemplateError(SlamkitError):
    """A prompt template names a field the item does not have, or is malformed."""


class BackendError(SlamkitError):
    """A backend failed to load a model or to generate."""


class MatrixError(SlamkitError):
    """A variant-matrix job (drift, speed, repro) cannot run as asked."""


class VocabularyMismatchError(MatrixError):
    """Drift asked between two models whose vocabularies differ (KL divergence needs the
    same tokens on both sides)."""


class MissingDependencyError(SlamkitError):
    """An optional dependency is not installed; the message carries the install command."""


def require(module: str, pip_name: str | None = None, extra: str | None = None) -> object:
    """Import ``module`` or raise MissingDependencyError with the exact install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only when missing
        target = f"slamkit[{extra}]" if extra else (pip_name or module)
        raise MissingDependencyError(
            f"{module!r} is needed for this feature but is not installed. "
            f"Install it with: pip install '{target}'"
        ) from exc
