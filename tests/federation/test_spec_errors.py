"""The spec's 15 FederationError variants (../shared/spec/003_87299dea3adf5edd.txt) each have a stable API code:
the code's row in docs/api.md's error table names the variant, and docs/api.md's list says the same. That every
documented code is raised somewhere, and every raised code documented, is tests/deploy/test_edge.py's check. Pure."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"

SPEC_VARIANTS = {
    "PrivacyBudgetExhausted": "partition_cap_reached",
    "InvalidEpsilon": "invalid_epsilon",
    "InvalidDelta": "invalid_delta",
    "SegmentValidation": "invalid_export",
    "VersionMismatch": "unsupported_version",
    "SignatureVerification": "invalid_signature",
    "WitnessChainBroken": "log_integrity_failed",
    "InsufficientObservations": "insufficient_observations",
    "QualityBelowThreshold": "quality_below_threshold",
    "RateLimited": "rate_limited",
    "PiiLeakDetected": "pii_leak",
    "ByzantineOutlier": "byzantine_outlier",
    "InsufficientContributions": "insufficient_contributions",
    "Serialization": "serialization_error",
    "Io": "database_unavailable",
}


def test_every_spec_variant_has_a_documented_code_whose_row_names_it():
    assert len(SPEC_VARIANTS) == 15
    text = DOCS.read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.*)$", text, re.MULTILINE))
    for variant, code in SPEC_VARIANTS.items():
        assert code in rows, f"{variant}: {code} is not in the error table"
        assert f"spec `{variant}`" in rows[code], f"the row of {code} does not name spec `{variant}`"
        assert f"`{variant}` `{code}`" in text, f"the variants list does not map {variant} to {code}"
