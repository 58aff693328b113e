"""SMART (Jo & Trummer, arXiv 2403.13835) with an anytime-valid variant.

Pick the cheapest model - or mix of models - whose outputs agree with a reference model
on at least a fraction 1 - delta of N items, with confidence gamma.

* :mod:`~slamkit.smart.bounds`      Clopper-Pearson, alpha spending, mixture confidence sequence
* :mod:`~slamkit.smart.profile`     profiling with bounds + expected-cost early stop
* :mod:`~slamkit.smart.mix`         Smart-ModelMix as a MILP, brute force, vectorized pairs
* :mod:`~slamkit.smart.select`      choice + guarantee statement
* :mod:`~slamkit.smart.equivalence` pluggable conformity functions
* :mod:`~slamkit.smart.stored`      on stored generations (writes ``selections``)
* :mod:`~slamkit.smart.live`        on live models through a ``generate`` callback
* :mod:`~slamkit.smart.simulate`    the Bernoulli simulator of the paper's settings
"""

from __future__ import annotations

import importlib
from typing import Any

# Lazy exports: ``slamkit`` CLI start-up must not pay for scipy unless SMART is used.
_EXPORTS = {
    "AlphaSpendingCP": "bounds", "BetaBinomialCS": "bounds", "ClopperPearson": "bounds",
    "clopper_pearson": "bounds", "EmbeddingSimilarity": "equivalence", "Exact": "equivalence",
    "ExtractedLabel": "equivalence", "JudgeVerdict": "equivalence", "Normalized": "equivalence",
    "equivalence_error": "equivalence", "get_equivalence": "equivalence",
    "backend_generate": "live", "priced": "live", "smart_live": "live",
    "ProfileResult": "profile", "profile": "profile", "Selection": "select", "choose": "select",
    "choose_mix": "select", "choose_single": "select", "smart_from_store": "stored",
}  # fmt: skip
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"slamkit.smart.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'slamkit.smart' has no attribute {name!r}")
