"""Management commands: create_user, create_ingest_key, create_metric."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from deploy.api.auth import hash_key
from telemetry.models import IngestKey, Metric

from helpers import envelope, item_codes, krr_item, post_batch

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def _value(output: str, label: str) -> str:
    match = re.search(rf"^{label}: (\S+)$", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_create_user_prints_a_working_token():
    output = run("create_user", "--role", "analyst", "ann")
    assert "ann" in output and "analyst" in output
    token = _value(output, "token")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.get("/api/v1/metrics").status_code == 200
    assert api.post("/api/v1/metrics", {"name": "x", "domain": ["a", "b"]}, format="json").status_code == 403


def test_create_admin_prints_a_working_admin_token():
    token = _value(run("create_user", "--role", "admin", "adam"), "token")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert api.post("/api/v1/metrics", {"name": "x", "domain": ["a", "b"]}, format="json").status_code == 201


def test_create_user_errors():
    run("create_user", "--role", "analyst", "ann")
    with pytest.raises(CommandError, match="user_exists"):
        run("create_user", "--role", "admin", "ann")
    with pytest.raises(CommandError):
        run("create_user", "--role", "root", "bob")
    with pytest.raises(CommandError, match="invalid_username"):
        run("create_user", "--role", "admin", "bad name")


def test_create_ingest_key_prints_a_key_that_ingests(make_metric):
    make_metric()
    output = run("create_ingest_key", "mobile-app")
    assert "mobile-app" in output
    plaintext = _value(output, "key")
    stored = IngestKey.objects.get()
    assert stored.app == "mobile-app"
    assert stored.key_hash == hash_key(plaintext)
    assert plaintext not in (stored.key_hash, stored.prefix, stored.app)
    response = post_batch(envelope([krr_item()]), plaintext)
    assert response.status_code == 200 and item_codes(response) == ["accepted"]
    # each run makes a new, different key
    assert _value(run("create_ingest_key", "mobile-app"), "key") != plaintext


def test_create_ingest_key_rejects_blank_app():
    with pytest.raises(CommandError, match="invalid_app"):
        run("create_ingest_key", "   ")
    assert IngestKey.objects.count() == 0


def test_create_metric_from_arguments():
    output = run("create_metric", "browser", "--domain", "chrome, firefox,safari", "--epsilon", "1.5",
                 "--protocol", "oue", "--contribution-bound", "2", "--description", "which browser")
    assert "browser" in output and "v1" in output and "oue" in output
    metric = Metric.objects.get(name="browser")
    assert metric.domain == ["chrome", "firefox", "safari"]
    assert (metric.epsilon, metric.protocol, metric.contribution_bound, metric.description) == (
        1.5, "oue", 2, "which browser")


def test_create_metric_defaults():
    run("create_metric", "small", "--domain", "a,b,c")
    metric = Metric.objects.get(name="small")
    assert (metric.epsilon, metric.protocol, metric.contribution_bound) == (2.0, "krr", 1)


def test_create_metric_from_json_list(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps([
        {"name": "os", "domain": ["linux", "mac", "windows"], "epsilon": 1.0, "protocol": "krr"},
        {"name": "country", "domain": [f"c{i}" for i in range(30)], "contribution_bound": 3},
    ]))
    output = run("create_metric", "--file", str(path))
    assert "os" in output and "country" in output
    assert sorted(Metric.objects.values_list("name", flat=True)) == ["country", "os"]
    assert Metric.objects.get(name="country").contribution_bound == 3


def test_create_metric_from_json_object(tmp_path):
    path = tmp_path / "one.json"
    path.write_text(json.dumps({"name": "single", "domain": ["a", "b"]}))
    assert "single" in run("create_metric", "--file", str(path))
    assert Metric.objects.filter(name="single").exists()


@pytest.mark.parametrize("args,match", [
    (("create_metric", "nodomain"), "domain"),
    (("create_metric", "bad name", "--domain", "a,b"), "invalid_metric"),
    (("create_metric", "dup", "--domain", "a,a"), "invalid_metric"),
    (("create_metric", "eps", "--domain", "a,b", "--epsilon", "0"), "invalid_metric"),
    (("create_metric", "bound", "--domain", "a,b", "--contribution-bound", "0"), "invalid_metric"),
    (("create_metric", "--file", "/nonexistent/metrics.json"), "cannot read"),
])
def test_create_metric_errors(args, match):
    with pytest.raises(CommandError, match=match):
        run(*args)
    assert Metric.objects.count() == 0


def test_create_metric_existing_name():
    run("create_metric", "twice", "--domain", "a,b")
    with pytest.raises(CommandError, match="metric_exists"):
        run("create_metric", "twice", "--domain", "a,b,c")
    assert Metric.objects.get(name="twice").domain == ["a", "b"]


def test_create_metric_file_with_unknown_key(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"name": "x", "domain": ["a", "b"], "colour": "red"}]))
    with pytest.raises(CommandError):
        run("create_metric", "--file", str(path))
    assert Metric.objects.count() == 0


def test_create_metric_file_with_non_object_entry_is_a_command_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(["not-a-definition"]))
    with pytest.raises(CommandError):
        run("create_metric", "--file", str(path))


def test_create_metric_file_is_all_or_nothing(tmp_path):
    """A file whose second definition is invalid creates none of them (nothing half-written)."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"name": "good", "domain": ["a", "b"]}, {"name": "bad", "domain": ["a"]}]))
    with pytest.raises(CommandError):
        run("create_metric", "--file", str(path))
    assert Metric.objects.count() == 0


def test_create_metric_file_reads_definitions_as_the_api_does(tmp_path):
    """ε as a numeric string is accepted, as by POST /metrics; a wrongly typed field names itself."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"name": "os", "domain": ["linux", "mac"], "epsilon": "1.5"}]))
    run("create_metric", "--file", str(path))
    assert Metric.objects.get(name="os").epsilon == 1.5
    path.write_text(json.dumps([{"name": "tz", "domain": ["a", "b"], "contribution_bound": "2"}]))
    with pytest.raises(CommandError, match="invalid_metric: contribution_bound must be an integer"):
        run("create_metric", "--file", str(path))


def test_create_metric_file_with_a_nul_character_is_a_command_error(tmp_path):
    """PostgreSQL cannot store NUL in text: refused before the database sees it (a DataError before)."""
    path = tmp_path / "m.json"
    path.write_text(json.dumps([{"name": "ok", "domain": ["a", "b"]}, {"name": "os", "domain": ["li\u0000nux", "mac"]}]))
    with pytest.raises(CommandError, match="nul_character"):
        run("create_metric", "--file", str(path))
    assert Metric.objects.count() == 0
