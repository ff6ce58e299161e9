"""Local-DP frequency oracles: client encoding, aggregation, unbiased estimates.

Protocols from Wang, Blocki, Li and Jha, "Locally Differentially Private
Protocols for Frequency Estimation" (USENIX Security 2017) plus subset
selection (Wang et al. 2016; Ye and Barg 2018). Every random draw comes from
:mod:`privacy.csprng`.
"""

from privacy.ldp.base import FrequencyOracle, PayloadError
from privacy.ldp.krr import KRR, krr_probabilities
from privacy.ldp.olh import OLH, olh_hash
from privacy.ldp.oue import OUE
from privacy.ldp.postprocess import confidence_intervals, norm_sub
from privacy.ldp.selection import PROTOCOLS, choose_protocol, make_oracle
from privacy.ldp.ss import SubsetSelection

__all__ = [
    "KRR",
    "OLH",
    "OUE",
    "PROTOCOLS",
    "FrequencyOracle",
    "PayloadError",
    "SubsetSelection",
    "choose_protocol",
    "confidence_intervals",
    "krr_probabilities",
    "make_oracle",
    "norm_sub",
    "olh_hash",
]
