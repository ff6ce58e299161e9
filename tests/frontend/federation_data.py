"""Registry data for the federation pages' tests and screenshots: contributors, SDK-built exports, one round."""

from __future__ import annotations

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import exports, rounds
from telemetry.sdk.federation import ExportBuilder


def populate(contributors: int = 4, domain: str = "search-ranking") -> list:
    """Register ``contributors`` labs, accept one export of each (weights, a prior, a note with PII) and run
    one FedAvg round; the accepted exports, oldest first."""
    accepted = []
    for n in range(contributors):
        key = Ed25519PrivateKey.generate()
        exports.register_contributor(name=f"lab-{n + 1}", public_key=key.public_key(),
                                     lifetime_epsilon_micro=(n + 2) * 5_000_000)
        body = (ExportBuilder(key, domain=domain, observations=120 + 10 * n, quality=0.9, noise_multiplier=1.1,
                              clip_norm=2.0)
                .add_weights(np.linspace(-1, 1, 24))
                .add_priors({("cold-start", "arm-b"): (3.0 + n, 2.0)})
                .add_string_field("notes", f"tuned by ops{n}@lab{n}.example on /home/ops{n}/runs from 10.0.0.{n + 1}")
                .build())
        accepted.append(exports.submit_export(body=body))
    rounds.run_round(domain=domain, strategy="fedavg", min_contributions=min(3, contributors))
    return accepted
