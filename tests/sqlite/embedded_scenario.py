"""The README's first run, on the embedded default: run in a fresh interpreter by test_embedded_default.py.

No DATABASE_URL (a SQLite file under VAR_DIR), no REDIS_URL (in-process cache and
limiter). Migrates, makes an admin with the management command, and then goes through
the HTTP API with Django's test client: a metric per storage kind (k-RR values, OUE
payloads), an ingest key, an analyst, batches of reports (accepted, replayed, limited,
conflicting, partly invalid), the roll-up, queries and their verification.

Prints one JSON object of what it saw; the assertions are in the test. Exits non-zero
on any exception. ``embedded_scenario.py query ANALYST_TOKEN ADMIN_TOKEN`` instead queries
and verifies what ``manage.py demo`` left in VAR_DIR.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from datetime import datetime, timedelta, timezone
from io import StringIO

import django

django.setup()

from django.core.management import call_command  # noqa: E402  (after django.setup())
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

DAY = (datetime.now(timezone.utc).date() - timedelta(days=1)).isoformat()
COLOR = ["red", "green", "blue"]
# What the clients send: k-RR labels (already randomized on the client; the server counts what it gets)
# and OUE bit strings, one client each, by region.
KRR_SENT = {"DE": ["red"] * 14 + ["green"] * 6, "US": ["green"] * 9 + ["blue"] * 3, "": ["blue"] * 4}
OUE_SENT = {"DE": ["10100", "00000", "11111", "01000"] * 5, "US": ["00011"] * 6}


class Api:
    def __init__(self, authorization: str) -> None:
        self.client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=authorization)

    def post(self, path: str, body) -> tuple[int, dict]:
        response = self.client.post(f"/api/v1/{path}", data=json.dumps(body), content_type="application/json")
        return response.status_code, response.json()

    def get(self, path: str) -> tuple[int, dict]:
        response = self.client.get(f"/api/v1/{path}")
        return response.status_code, response.json()


def envelope(client_id: str, reports: list[dict], batch_id: str | None = None) -> dict:
    return {"batch_id": batch_id or str(uuid.uuid4()), "client_id": client_id, "reports": reports}


def krr(value: str, region: str) -> dict:
    return {"metric": "color", "value": value, "day": DAY, **({"region": region} if region else {})}


def oue(bits: str, region: str) -> dict:
    return {"metric": "bits", "payload": bits, "day": DAY, **({"region": region} if region else {})}


def report_rows() -> int:
    """How many reports are staged (stored and not yet rolled up)."""
    from telemetry import staging
    from telemetry.catalog import catalog
    from telemetry.models import StagedReports

    return sum(len(staging.unpack_rows(catalog.by_id(row.metric_id), bytes(row.payload)))
               for row in StagedReports.objects.all())


def main() -> dict:
    seen: dict = {"vendor": connection.vendor, "database": str(connection.settings_dict["NAME"])}
    call_command("migrate", verbosity=0)
    out = StringIO()
    call_command("create_user", "--role", "admin", "root", stdout=out)
    admin = Api("Token " + re.search(r"^token: (\S+)$", out.getvalue(), re.MULTILINE).group(1))

    seen["create_metrics"] = [
        admin.post("metrics", {"name": "color", "domain": COLOR, "epsilon": 2, "protocol": "krr"})[0],
        admin.post("metrics", {"name": "bits", "domain": [f"v{i}" for i in range(5)], "epsilon": 1,
                               "protocol": "oue"})[0],
    ]
    status, body = admin.post("ingest-keys", {"app": "sqlite-demo"})
    seen["create_ingest_key"] = status
    ingest = Api(f"Api-Key {body['key']}")
    status, body = admin.post("users", {"username": "ana", "role": "analyst"})
    seen["create_analyst"] = status
    analyst = Api(f"Token {body['token']}")

    # ingest: one client per report pair, through the ORM store
    statuses, accepted = [], 0
    clients = 0
    for region, values in KRR_SENT.items():
        bits = OUE_SENT.get(region, [])
        for i, value in enumerate(values):
            reports = [krr(value, region)] + ([oue(bits[i], region)] if i < len(bits) else [])
            status, body = ingest.post("reports", envelope(f"client-{clients}", reports))
            clients += 1
            statuses.append(status)
            accepted += body["accepted"]
    seen["ingest"] = {"statuses": sorted(set(statuses)), "accepted": accepted, "rows": report_rows()}

    first = envelope("client-0", [krr("blue", "DE")])
    seen["limited"] = ingest.post("reports", first)[1]  # client-0 already sent its one color report of the day
    rows = report_rows()
    status, replay = ingest.post("reports", first)
    seen["replay"] = {"status": status, "same": replay == seen["limited"], "rows_unchanged": report_rows() == rows}
    status, body = ingest.post("reports", {**first, "reports": [krr("red", "DE")]})
    seen["conflict"] = {"status": status, "code": body.get("code"), "rows_unchanged": report_rows() == rows}
    status, body = ingest.post("reports", envelope("client-new", [krr("purple", "DE"), oue("11", "DE"),
                                                                  oue("00000", "FR")]))
    seen["partly_invalid"] = {"status": status, "codes": [i.get("code", i["status"]) for i in body["items"]],
                              "rows_added": report_rows() - rows}

    from telemetry.catalog import catalog
    from telemetry.rollup import advance_rollup
    from telemetry.selectors import observed_counts

    staged = report_rows()
    advance_rollup()
    seen["rollup"] = {"staged_before": staged, "staged_after": report_rows()}
    day = datetime.fromisoformat(DAY).date()
    seen["observed"] = {
        name: {cell.region: [cell.reports, cell.support.tolist()]
               for cell in observed_counts(catalog.lookup(name), day, day, group_by=("region",))}
        for name in ("color", "bits")
    }

    # queries and their verification
    query = {"metric": "color", "start": DAY, "end": DAY, "group_by": ["region"], "epsilon": 1}
    status, answer = analyst.post("queries", query)
    seen["query"] = {"status": status, "answer": answer}
    status, again = analyst.post("queries", query)
    seen["query_again"] = {"status": status, "privacy": again.get("privacy"),
                           "release_id": again.get("release", {}).get("id")}
    status, bits_answer = analyst.post("queries", {"metric": "bits", "start": DAY, "end": DAY, "epsilon": 2})
    seen["bits_query"] = {"status": status, "answer": bits_answer}
    seen["verify"] = {}
    for name, release in (("color", answer["release"]["id"]), ("bits", bits_answer["release"]["id"])):
        status, report = admin.post(f"releases/{release}/verify", {})
        seen["verify"][name] = {"status": status, "noise_verified": report.get("noise_verified"),
                                "postprocessing_verified": report.get("postprocessing_verified")}
    out = StringIO()
    call_command("verify_release", answer["release"]["id"], stdout=out)
    seen["verify_command"] = out.getvalue()
    seen["budget"] = analyst.get("budgets/me")
    return seen


def query_demo(analyst_token: str, admin_token: str) -> dict:
    """After ``manage.py demo``: the query its welcome text suggests, and the release's verification."""
    today = datetime.now(timezone.utc).date()
    status, answer = Api(f"Token {analyst_token}").post("queries", {
        "metric": "app_theme", "start": (today - timedelta(days=2)).isoformat(), "end": today.isoformat(),
        "group_by": ["region"]})
    seen = {"query": {"status": status, "answer": answer}, "verify": None}
    if status == 200:
        status, report = Api(f"Token {admin_token}").post(f"releases/{answer['release']['id']}/verify", {})
        seen["verify"] = {"status": status, "noise_verified": report.get("noise_verified"),
                          "postprocessing_verified": report.get("postprocessing_verified")}
    return seen


if __name__ == "__main__":
    json.dump(query_demo(*sys.argv[2:4]) if sys.argv[1:2] == ["query"] else main(), sys.stdout)
