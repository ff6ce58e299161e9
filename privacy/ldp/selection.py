"""Protocol names, construction and selection."""

from __future__ import annotations

from privacy.ldp.base import DEFAULT_EPSILON, DEFAULT_K, FrequencyOracle
from privacy.ldp.krr import KRR
from privacy.ldp.olh import OLH
from privacy.ldp.oue import OUE
from privacy.ldp.ss import SubsetSelection

PROTOCOLS = ("krr", "oue", "olh", "ss")
_ORACLES: dict[str, type[FrequencyOracle]] = {cls.name: cls for cls in (KRR, OUE, OLH, SubsetSelection)}
#: Relative slack under which two variances count as equal (ss with omega = 1 *is* krr).
_TIE = 1e-9


def choose_protocol(k: int = DEFAULT_K, epsilon: float = DEFAULT_EPSILON) -> str:
    """The protocol whose estimates have the least variance, ties to the earlier one.

    Compares the per-report c_v = 0 variance term q(1-q)/(p-q)^2 (Wang et al.
    2017, Sec. 3), which dominates for all but the most frequent values.
    """
    variances = {name: float(_ORACLES[name](k, epsilon).variance(1)[0]) for name in PROTOCOLS}
    best = min(variances.values())
    return next(name for name in PROTOCOLS if variances[name] <= best * (1 + _TIE))


def make_oracle(protocol: str, k: int = DEFAULT_K, epsilon: float = DEFAULT_EPSILON) -> FrequencyOracle:
    """The oracle named ``protocol`` (one of PROTOCOLS, or 'auto' to choose)."""
    if protocol == "auto":
        protocol = choose_protocol(k, epsilon)
    if protocol not in _ORACLES:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {PROTOCOLS} or 'auto'")
    return _ORACLES[protocol](k, epsilon)
