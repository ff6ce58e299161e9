"""The browser SDK as the app serves it, in a page of the app, against the live server (PostgreSQL, Redis).

The page imports ``/static/frontend/sdk/privtel.js``, fetches the catalog with the ingest key, records
reports of a metric of every protocol, and posts them. The server decodes every report (all accepted,
every one counted by the roll-up); a replay of the same batch_id is answered the same and not counted
twice; a batch whose request fails stays in localStorage across a reload and is resent under its batch_id.
"""

from __future__ import annotations

import pytest

from telemetry.models import Batch, ObservedCounts
from telemetry.rollup import advance_rollup

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SDK = "/static/frontend/sdk/privtel.js"
METRICS = {"theme": "krr", "features": "oue", "pages": "olh", "apps": "ss"}
DAYS = 3

RECORD_AND_FLUSH = """async ({sdkUrl, key, metrics, days}) => {
  const sdk = await import(sdkUrl);
  const sent = [];
  const fetch = async (url, init) => {
    const response = await window.fetch(url, init);
    if (init.method === "POST") sent.push({body: JSON.parse(init.body), status: response.status,
                                          replayed: response.headers.get("Idempotent-Replayed")});
    return response;
  };
  const client = new sdk.TelemetryClient(location.origin, key, {fetch});
  for (const name of metrics) {
    const spec = await client.metric(name);
    for (let d = 0; d < days; d++) {
      const day = new Date(Date.now() - d * 86400000).toISOString().slice(0, 10);
      if (!(await client.record(name, spec.domain[d % spec.domain.length], {day, region: "DE"}))) throw new Error("capped");
    }
  }
  const answers = await client.flush();
  const spoolAfter = localStorage.getItem("privtel:spool");
  // The acknowledgement was lost: the same batch goes back to the spool and is sent again, unchanged.
  localStorage.setItem("privtel:spool", JSON.stringify([sent[0].body]));
  const replayed = await client.resendSpooled();
  return {answers, replayed, sent, spoolAfter, spoolAfterReplay: localStorage.getItem("privtel:spool")};
}"""


@pytest.fixture
def key(q):
    for name, protocol in METRICS.items():
        q.metric(name, domain=[f"{name}_{i}" for i in range(12)], protocol=protocol, epsilon=2.0)
    return q.ingest_key("web")[1]


def test_a_batch_the_sdk_posts_is_accepted_and_its_replay_is_not_counted_twice(page, key):
    page.goto("/login")
    seen = page.evaluate(RECORD_AND_FLUSH, {"sdkUrl": SDK, "key": key, "metrics": list(METRICS), "days": DAYS})
    reports = len(METRICS) * DAYS
    (answer,) = seen["answers"]
    assert answer["accepted"] == reports and answer["rejected"] == 0, answer
    assert seen["spoolAfter"] == "[]"  # acknowledged, so no longer kept
    first, replay = seen["sent"]
    assert first["body"] == replay["body"] and first["status"] == replay["status"] == 200
    assert (first["replayed"], replay["replayed"]) == (None, "true")
    assert seen["replayed"] == [answer] and seen["spoolAfterReplay"] == "[]"
    batch = first["body"]
    assert len(batch["client_id"]) == 32 and {r["region"] for r in batch["reports"]} == {"DE"}
    assert Batch.objects.count() == 1
    advance_rollup()
    counted = {(row.metric.name, row.day.isoformat()): row.reports for row in ObservedCounts.objects.select_related("metric")}
    assert counted == {(r["metric"], r["day"]): 1 for r in batch["reports"]}  # each report once, not twice


FAIL_THEN_KEEP = """async ({sdkUrl, key}) => {
  const sdk = await import(sdkUrl);
  const client = new sdk.TelemetryClient(location.origin, key, {maxRetries: 1, backoffBaseMs: 1});
  await client.record("theme", "theme_3");
  try { await client.flush(); return "sent"; } catch (error) {
    return {code: error.code, retained: error.errors[0].retained, spool: JSON.parse(localStorage.getItem("privtel:spool"))};
  }
}"""

RESEND = """async ({sdkUrl, key}) => {
  const sdk = await import(sdkUrl);
  const client = new sdk.TelemetryClient(location.origin, key);
  return {answers: await client.resendSpooled(), clientId: client.clientId, spool: localStorage.getItem("privtel:spool")};
}"""


def test_an_unsent_batch_survives_a_reload_and_is_resent_under_its_batch_id(page, key):
    page.goto("/login")
    attempts = []

    def fail(route):
        attempts.append(route.request.post_data_json)
        route.abort("connectionrefused")

    page.route("**/api/v1/reports", fail)
    failed = page.evaluate(FAIL_THEN_KEEP, {"sdkUrl": SDK, "key": key})
    assert failed["code"] == "flush_failed" and failed["retained"] is True
    (kept,) = failed["spool"]
    assert attempts == [kept, kept]  # the first try and one retry, same batch_id and body
    assert Batch.objects.count() == 0

    page.unroute("**/api/v1/reports")
    page.reload()
    resent = page.evaluate(RESEND, {"sdkUrl": SDK, "key": key})
    assert resent["answers"][0]["accepted"] == 1 and resent["spool"] == "[]"
    assert resent["clientId"] == kept["client_id"]  # the same install, from localStorage
    assert [str(b.batch_id) for b in Batch.objects.all()] == [kept["batch_id"]]
