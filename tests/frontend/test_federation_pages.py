"""The export registry's pages (issue 10), without a browser: who may open them, what they show, and the
server-side inclusion check with the SDK's pure verifiers (tampering makes it fail)."""

from __future__ import annotations

import secrets

import pytest
from django.test import Client
from federation_data import populate

from federation.models import Export, LogEntry

pytestmark = pytest.mark.django_db
PAGES = ["/federation/exports", "/federation/contributors", "/federation/log"]


@pytest.fixture(autouse=True)
def log_key(settings):
    settings.LOG_SIGNING_KEY = secrets.token_hex(32)


@pytest.mark.parametrize("url", PAGES)
def test_only_admins_open_the_registry_pages(analyst_client, url):
    assert Client().get(url).status_code == 302  # to the login form
    assert analyst_client.get(url).status_code == 403


def test_the_exports_page_lists_exports_and_links_their_proof_and_log_entry(admin_client):
    accepted = populate()
    html = admin_client.get("/federation/exports").content.decode()
    for export in accepted:
        assert f'href="/federation/exports/{export.pk}"' in html
        assert f'href="/federation/log?index={export.log_entry.index}"' in html


def test_an_export_page_shows_its_proof_redaction_log_and_no_pii(admin_client):
    export = populate()[0]
    response = admin_client.get(f"/federation/exports/{export.pk}")
    html = response.content.decode()
    assert response.status_code == 200
    for text in ("Differential-privacy proof", "Redaction log", "gaussian", "email", "Ed25519 signature",
                 export.digest, "search-ranking round 1"):
        assert text in html, text
    assert "ops0@lab0.example" not in html and "/home/ops0" not in html  # stripped on the contributor's side
    assert admin_client.get("/federation/exports/999").status_code == 404


def test_the_contributors_page_shows_budgets(admin_client):
    populate(contributors=3)
    html = admin_client.get("/federation/contributors").content.decode()
    assert all(f"lab-{n}" in html for n in (1, 2, 3)) and "of 10" in html and "<meter" in html


def test_verify_inclusion_checks_an_export_and_an_aggregate(admin_client):
    populate(contributors=3)
    head = admin_client.get("/federation/log")
    assert 'data-testid="tree-size">4<' in head.content.decode() and "signature verifies" in head.content.decode()
    for index in (0, 3):  # an export; the round's aggregate
        html = admin_client.post("/federation/log", {"index": index}).content.decode()
        assert f"entry {index} is included in the signed tree of 4 entries" in html
    assert "is an aggregate" in html
    missing = admin_client.get("/federation/log", {"index": 9}).content.decode()
    assert "The log has no entry 9" in missing and 'role="alert"' in missing
    assert "must be a whole number" in admin_client.post("/federation/log", {"index": "x"}).content.decode()


def test_verify_inclusion_fails_for_an_edited_entry(admin_client):
    populate(contributors=3)
    row = LogEntry.objects.get(index=1)
    LogEntry.objects.filter(pk=row.pk).update(entry=bytes(row.entry).replace(b"search-ranking", b"search-rankinG"))
    html = admin_client.get("/federation/log", {"index": 1}).content.decode()
    assert "entry 1 is NOT included" in html
    assert Export.objects.count() == 3
