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

from slamkit.smart.bounds import AlphaSpendingCP, BetaBinomialCS, ClopperPearson, clopper_pearson
from slamkit.smart.equivalence import (
    EmbeddingSimilarity,
    Exact,
    ExtractedLabel,
    JudgeVerdict,
    Normalized,
    equivalence_error,
    get_equivalence,
)
from slamkit.smart.live import backend_generate, priced, smart_live
from slamkit.smart.profile import ProfileResult, profile
from slamkit.smart.select import Selection, choose, choose_mix, choose_single
from slamkit.smart.stored import smart_from_store

__all__ = [
    "AlphaSpendingCP", "BetaBinomialCS", "ClopperPearson", "EmbeddingSimilarity", "Exact",
    "ExtractedLabel", "JudgeVerdict", "Normalized", "ProfileResult", "Selection", "choose",
    "choose_mix", "choose_single", "clopper_pearson", "equivalence_error", "get_equivalence",
    "profile", "smart_from_store", "smart_live", "backend_generate", "priced",
]  # fmt: skip
