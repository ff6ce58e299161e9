"""End to end over HTTP (issue 10): the SDK builds, signs and posts exports to a live server; an admin runs a
round over the API; the SDK verifies, against signed tree heads, that its export and the aggregate are logged,
and imports the aggregate's priors.

The live server is pytest-django's (a real socket, a threaded WSGI server, the test database); the SDK talks
to it with nothing but ``http.client``.
"""

from __future__ import annotations

import http.client
import json
import secrets
from urllib.parse import urlsplit

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation import exports
from privacy.federated import signing
from privacy.federated.priors import BetaPrior
from telemetry.sdk.federation import (ExportBuilder, FederationClient, FederationError, LocalBudget, export_entry,
                                      import_priors, verify_inclusion)

pytestmark = pytest.mark.django_db(transaction=True)
DIM = 32


def admin_post(base_url: str, token: str, path: str, body: dict) -> tuple[int, dict]:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("POST", path, body=json.dumps(body).encode(),
                       headers={"Content-Type": "application/json", "Authorization": f"Token {token}"})
    response = connection.getresponse()
    status, data = response.status, json.loads(response.read())
    connection.close()
    return status, data


def test_sdk_exports_are_logged_aggregated_and_verified_over_http(live_server, settings, q):
    settings.LOG_SIGNING_KEY = secrets.token_hex(32)
    server_key = signing.load_private_key(settings.LOG_SIGNING_KEY).public_key()  # what the SDK is given
    client = FederationClient(live_server.url)
    centre = np.linspace(-0.5, 0.5, DIM)
    posted = []
    for n in range(6):
        key = Ed25519PrivateKey.generate()
        exports.register_contributor(name=f"site-{n}", public_key=key.public_key(), lifetime_epsilon_micro=50_000_000)
        body = (ExportBuilder(key, domain="ranking", observations=200 + n, quality=0.9, noise_multiplier=1.0,
                              clip_norm=4.0, budget=LocalBudget(20))
                .add_weights(centre)
                .add_priors({("cold", "arm-1"): (4.0, 2.0)})
                .add_string_field("notes", f"tuned on /home/site{n}/runs by ops{n}@example.org")
                .build())
        notes = next(s for s in body["segments"] if s["kind"] == "string_fields")["fields"]["notes"]
        assert "example.org" not in notes and "/home" not in notes and body["redaction_log"]["counts"]
        accepted = client.post_export(body)
        assert accepted["epsilon"] == body["proof"]["epsilon"]
        head = client.verify_included(export_entry(body), accepted["log_index"], [server_key])
        assert head.tree_size == n + 1
        posted.append((body, accepted["log_index"]))
        kept = kept if n else head  # the first head this client saw

    with pytest.raises(FederationError) as refused:  # a replay is refused with its code
        client.post_export(posted[0][0])
    assert refused.value.code == "duplicate_export" and refused.value.status == 409

    _, token = q.user("operator", "admin")
    status, aggregate = admin_post(live_server.url, token, "/api/v1/federation/rounds",
                                   {"domain": "ranking", "strategy": "multi_krum", "min_contributions": 5})
    assert status == 201, aggregate
    latest = client.latest_aggregate("ranking")
    assert latest["id"] == aggregate["id"] and latest["entry"]["participation_count"] >= 5
    # the aggregate is its own log entry: the SDK checks it against a fresh signed head
    head = client.verify_included(latest["canonical_json"].encode(), latest["log_index"], [server_key])
    assert head.tree_size == 7
    # the log only grew since the first head this client kept
    assert client.verify_extends(kept, [server_key]).tree_size == 7
    for signer in (Ed25519PrivateKey.generate(), settings.LOG_SIGNING_KEY):  # a stranger's head; a forked one
        forged = signing.sign_tree_head(signer, tree_size=1, root_hash=bytes(32))
        with pytest.raises(FederationError, match="inclusion_failed"):
            client.verify_extends(forged, [server_key])
    # and every earlier export is still in the grown tree
    for body, index in posted:
        proof = client.inclusion_proof(index, head.tree_size)
        verify_inclusion(export_entry(body), index, [bytes.fromhex(h) for h in proof["audit_path"]], head,
                         [server_key])
    # a head from another key, or an entry that is not the logged one, fails
    with pytest.raises(FederationError, match="inclusion_failed"):
        client.verify_included(latest["canonical_json"].encode(), latest["log_index"],
                               [Ed25519PrivateKey.generate().public_key()])
    with pytest.raises(FederationError, match="inclusion_failed"):
        client.verify_included(latest["canonical_json"].encode() + b" ", latest["log_index"], [server_key])

    merged = import_priors({("cold", "arm-1"): BetaPrior(2.0, 2.0)}, latest["entry"], local_version=1)
    assert merged[("cold", "arm-1")].evidence > BetaPrior(2.0, 2.0).evidence
