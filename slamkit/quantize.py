"""Derive lower-bit variants of a GGUF with llama.cpp's own quantizer (the "variant ladder").

>>> from slamkit.catalog import smollm2_path
>>> variant_ladder(smollm2_path(), ["Q4_0", "Q8_0"], "data/models")   # doctest: +SKIP

Sources are usually already quantized, so requantizing is allowed; a variant derived from a
Q4_1 file can never be better than that Q4_1 (the notes say so). On models whose row widths
are not divisible by 256 (SmolLM2-135M: 576, Gemma-3-270M: 640) llama.cpp silently writes
K-quant requests (Q2_K..Q6_K) as legacy types; :func:`quantize` detects that from the tensor
types actually written and warns. The legacy ladder Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 is the
honest one for such models.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from slamkit.catalog import (
    FTYPE_NAMES,
    LEGACY_LADDER,
    ModelInfo,
    catalog_df,
    fallback_note,
    fallback_report,
    inspect_gguf,
    register,
)
from slamkit.errors import ModelNotFoundError, SlamkitError, require
from slamkit.gguf import is_valid_gguf, read_gguf

if TYPE_CHECKING:
    from slamkit.store import Store

#: llama.cpp refuses these without an importance matrix (slamkit does not compute one).
NEEDS_IMATRIX = ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M", "Q2_K_S")
FTYPES: dict[str, int] = {name: i for i, name in FTYPE_NAMES.items()}


class QuantizeError(SlamkitError):
    """A quantization request is invalid or llama.cpp's quantizer failed."""


class QuantFallbackWarning(UserWarning):
    """llama.cpp wrote other tensor types than requested (row widths not divisible by 256)."""


def ftype_id(name: str) -> int:
    """llama.cpp ftype id for a name such as ``Q4_K_M`` (case-insensitive)."""
    key = name.strip().upper().removeprefix("MOSTLY_")
    if key not in FTYPES:
        raise QuantizeError(
            f"Unknown quantization type {name!r}. Valid names: {', '.join(valid_ftypes())}. "
            f"For SmolLM2/Gemma-270M use the legacy ladder {', '.join(LEGACY_LADDER)}."
        )
    if key in NEEDS_IMATRIX:
        raise QuantizeError(
            f"{key} needs an importance matrix, which slamkit does not compute; choose one of "
            f"{', '.join(valid_ftypes())}."
        )
    return FTYPES[key]


def valid_ftypes() -> list[str]:
    """Quantization type names :func:`quantize` accepts."""
    return [n for n in FTYPES if n not in NEEDS_IMATRIX]


_KEEPALIVE: list[Any] = []


@contextlib.contextmanager
def _capture_llama_log(llama_cpp: Any, verbose: bool) -> Iterator[list[str]]:
    """Collect llama.cpp's log lines (echoed to stderr only if ``verbose``), then restore
    llama-cpp-python's own log callback."""
    lines: list[str] = []

    @llama_cpp.llama_log_callback  # type: ignore[misc]
    def _collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        msg = text.decode("utf-8", errors="replace")
        lines.append(msg)
        if verbose:
            print(msg, end="", file=sys.stderr, flush=True)

    llama_cpp.llama_log_set(_collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        try:
            from llama_cpp import _logger

            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        except ImportError:  # pragma: no cover - other layouts: keep ours alive, stay silent
            verbose = False
            _KEEPALIVE.append(_collect)


def output_path(src: str | Path, ftype: str, out_dir: str | Path) -> Path:
    """``<out_dir>/<src stem>.<FTYPE>.gguf``; the stem keeps the source's own quant name."""
    return Path(out_dir) / f"{Path(src).name.removesuffix('.gguf')}.{ftype.upper()}.gguf"


def quantize(
    src: str | Path,
    ftype: str,
    out_dir: str | Path,
    store: Store | None = None,
    *,
    nthread: int = 1,
    verbose: bool = False,
    cache: str | Path | None = None,
) -> ModelInfo:
    """Quantize ``src`` to ``ftype`` with llama.cpp; return the new file's ModelInfo.

    Resumable: an existing output with a valid header is reused. Written to a temporary
    file and renamed, so an interrupted run leaves no half file under the final name.
    The ModelInfo records the parent's sha256 and the tensor types actually written; a
    K-quant request that fell back to legacy types raises a QuantFallbackWarning. With
    ``store``, parent and variant are registered in ``models``.
    """
    src = Path(src)
    if not src.exists():
        raise ModelNotFoundError(f"{src}: no such model file to quantize.")
    name = ftype.strip().upper()
    fid = ftype_id(name)
    parent = inspect_gguf(src, cache=cache)
    out = output_path(src, name, out_dir)
    if not is_valid_gguf(out):
        _run_quantizer(src, out, fid, name, nthread, verbose)
    header = read_gguf(out)
    info = inspect_gguf(out, source="quantize", parent_model_id=parent.sha256, cache=cache)
    if info.license_source.startswith("not declared") and parent.license != "not declared":
        info.license = parent.license
        info.license_source = f"inherited from the parent {parent.name} ({parent.license_source})"
    info.requested_quant = name
    if info.sha256 == parent.sha256:  # e.g. Q4_K_M -> Q4_K_M: llama.cpp wrote the same bytes
        info.parent_model_id = None
        info.notes.append(f"byte-identical to its source {parent.name}: the same catalog entry")
    counts, message = fallback_report(header, name)
    info.fallback_types = counts
    info.quant_note = fallback_note(header, name)
    if parent.quant not in ("F32", "F16", "BF16", None):
        info.notes.append(
            f"requantized from {parent.quant} ({parent.name}): quality is bounded by the source"
        )
    if message:
        info.notes.append(message)
        warnings.warn(message, QuantFallbackWarning, stacklevel=2)
    if store is not None:
        register(store, [parent, info])
    return info


def _run_quantizer(src: Path, out: Path, fid: int, name: str, nthread: int, verbose: bool) -> None:
    llama_cpp = require("llama_cpp", "llama-cpp-python")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()  # type: ignore[attr-defined]
    params.ftype = fid
    params.nthread = nthread
    params.allow_requantize = True  # the default models are already quantized
    try:
        with _capture_llama_log(llama_cpp, verbose) as log:
            rc = llama_cpp.llama_model_quantize(  # type: ignore[attr-defined]
                str(src).encode(), str(tmp).encode(), ctypes.byref(params)
            )
        if rc != 0 or not is_valid_gguf(tmp):
            tail = "".join(log).strip().splitlines()[-5:]
            raise QuantizeError(
                f"llama.cpp could not quantize {src} to {name} (return code {rc}). "
                + ("Its last log lines:\n  " + "\n  ".join(tail) if tail else "")
            )
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def variant_ladder(
    src: str | Path,
    ftypes: Iterable[str] = LEGACY_LADDER,
    out_dir: str | Path = "data/models",
    store: Store | None = None,
    *,
    nthread: int = 1,
    cache: str | Path | None = None,
) -> list[ModelInfo]:
    """Quantize ``src`` to each of ``ftypes`` (validated up front), with a progress bar."""
    from tqdm.auto import tqdm

    names = [f.strip().upper() for f in ftypes if f.strip()]
    for n in names:
        ftype_id(n)
    infos = []
    bar = tqdm(names, desc=f"quantize {Path(src).name}", unit="variant")
    for n in bar:
        bar.set_postfix_str(n)
        infos.append(quantize(src, n, out_dir, store, nthread=nthread, cache=cache))
    return infos


def derive(
    infos: Iterable[ModelInfo],
    parent: str,
    quant_types: Iterable[str],
    out_dir: str | Path = "data/models",
) -> list[ModelInfo]:
    """Derive ``quant_types`` from the catalog entry named ``parent`` (none: an empty list).

    The notebooks' one call: ``quant_types=[]`` derives nothing, an unknown ``parent``
    is a clear error naming the catalog entries.
    """
    types = [t for t in quant_types if str(t).strip()]
    if not types:
        return []
    by_name = {i.name: i for i in infos}
    if parent not in by_name:
        raise ModelNotFoundError(
            f"quantize_model {parent!r} is not in the catalog; entries: "
            f"{', '.join(sorted(by_name)) or 'none'}. Name one of them."
        )
    return variant_ladder(by_name[parent].path, types, out_dir=out_dir)


def variants_df(variants: Iterable[ModelInfo]) -> pd.DataFrame:
    """Derived variants as a table (name, quant, size, tensor_types, notes); empty when none."""
    cols = ["name", "quant", "size", "tensor_types", "notes"]
    variants = list(variants)
    return catalog_df(variants)[cols] if variants else pd.DataFrame(columns=cols)
