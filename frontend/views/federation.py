"""The export registry's pages (admins): exports with their proof and redaction log, contributors, the signed
tree head, rounds, and "verify inclusion" of any log entry.

Inclusion is checked twice: on the server with the SDK's pure verifiers (``federation.log.check_entry``:
``privacy.federated.signing.verify_tree_head`` and ``privacy.federated.transparency.verify_inclusion``), and in
the browser, which recomputes the leaf hash and the root from the entry's bytes and the audit path with
WebCrypto SHA-256 and checks the head's Ed25519 signature with the server's public key
(``frontend/static/frontend/federation/verify.js``): the page's claim is not taken on trust.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from django.shortcuts import render
from django.urls import path

from federation import log, selectors
from frontend import access
from frontend.access import admin_required
from privacy.epsilon import from_micro
from privacy.federated import signing
from privacy.federated.canonical import loads


def _epsilon(micro: int) -> float:
    return float(from_micro(micro))


@admin_required
def exports(request):
    rows = [{"export": row, "epsilon": _epsilon(row.epsilon_claimed_micro), "charged": _epsilon(row.epsilon_charged_micro)}
            for row in selectors.exports_newest()]
    return render(request, "frontend/federation/exports.html", {"rows": rows})


@admin_required
def export_detail(request, export_id: int):
    row = selectors.export_by_id(export_id)
    if row is None:
        return access.not_found(request, what="export")
    body = loads(row.canonical_json)
    proof = body["proof"]
    segments = [{"index": n, "kind": s.get("kind"), "size": len(s["values"]) if isinstance(s.get("values"), list)
                 else None, "fields": s} for n, s in enumerate(body["segments"])]
    return render(request, "frontend/federation/export_detail.html", {
        "export": row, "manifest": body["manifest"], "proof": proof,
        "parts": proof["parts"] if "parts" in proof else [proof], "redaction": body["redaction_log"],
        "segments": segments, "signature": body["signature"],
        "epsilon": _epsilon(row.epsilon_claimed_micro), "charged": _epsilon(row.epsilon_charged_micro),
    })


@admin_required
def contributors(request):
    rows = [row | {"cap": _epsilon(row["cap_micro"]), "spent": _epsilon(row["spent_micro"]),
                   "share": min(100, round(100 * row["spent_micro"] / row["cap_micro"])) if row["cap_micro"] else 0}
            for row in selectors.contributors_with_budgets()]
    return render(request, "frontend/federation/contributors.html", {"rows": rows})


def _requested_index(request) -> tuple[int | None, str | None]:
    raw = (request.POST if request.method == "POST" else request.GET).get("index")
    if raw in (None, ""):
        return None, None
    try:
        return int(raw), None
    except ValueError:
        return None, "The entry index must be a whole number."


@admin_required
def transparency_log(request):
    """The signed head and the rounds; with ``index`` (GET link or POST form), that entry's check."""
    head = log.signed_head()
    index, error = _requested_index(request)
    check = None
    if index is not None:
        check = log.check_entry(index)
        if check is None:
            error = f"The log has no entry {index}: it holds {head.tree_size} entries (0 to {head.tree_size - 1})."
    public_key = signing.public_key_bytes(log.signing_key().public_key())
    try:
        signing.verify_tree_head(head, [public_key])
        head_ok = True
    except signing.SignatureError:
        head_ok = False
    browser_check = None if check is None else {
        "entry": base64.b64encode(check.entry).decode(), "index": check.index,
        "audit_path": [node.hex() for node in check.audit_path], "head": check.head.to_json(),
        "public_key": public_key.hex(),
    }
    return render(request, "frontend/federation/log.html", {
        "head": head, "head_ok": head_ok, "signed_at": datetime.fromtimestamp(head.timestamp_ms / 1000, timezone.utc), "public_key": public_key.hex(), "check": check, "error": error,
        "index": "" if index is None else index, "browser_check": browser_check,
        "rounds": selectors.aggregate_rounds(),
    })


urlpatterns = [
    path("federation/exports", exports, name="federation-exports"),
    path("federation/exports/<int:export_id>", export_detail, name="federation-export"),
    path("federation/contributors", contributors, name="federation-contributors"),
    path("federation/log", transparency_log, name="federation-log"),
]
