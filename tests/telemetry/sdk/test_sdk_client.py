"""Unit tests of the client SDK against a stdlib fake server with failure injection."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import socket
import threading
import time
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import telemetry.sdk.client as client_module
from telemetry.sdk import FlushError, PrivacyRefused, TelemetryClient, TelemetryError, simulate_population

API_KEY = "test-key"
DAY = "2024-05-01"
DOMAIN = [f"v{i}" for i in range(20)]


def metric(name="browser", protocol="krr", epsilon=2.0, bound=1000, domain=DOMAIN, version=1, report_epsilon=None):
    """A metric as GET /metrics lists it; without report_epsilon, as an older server does (λ = 1)."""
    definition = {
        "name": name,
        "version": version,
        "domain": list(domain),
        "epsilon": epsilon,
        "protocol": protocol,
        "contribution_bound": bound,
    }
    if report_epsilon is not None:
        definition["report_epsilon"] = report_epsilon
    return definition


CATALOG = [
    metric(),
    metric("olh_metric", "olh"),
    metric("oue_metric", "oue"),
    metric("ss_metric", "ss"),
    metric("capped", bound=2),
]


class FakeServer:
    """The ingest API, with a script of failures to inject into POST /reports.

    Script actions, consumed one per POST: "ok", "503", "drop" (close without a
    response), "close_after" (answer, then close the keep-alive connection
    silently) or an int 4xx status. An empty script answers "ok".
    """

    def __init__(self) -> None:
        self.script: list = []
        self.posts: list[dict] = []  # {"raw": bytes, "body": dict, "auth": str}
        self.gets = 0
        self.connections = 0
        self.answers: dict[str, dict] = {}
        self.catalog_body: dict = {"metrics": CATALOG}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def bodies(self) -> list[dict]:
        return [post["body"] for post in self.posts]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle plus
                # delayed ACKs stall every keep-alive response by ~40 ms.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                with server.lock:
                    server.connections += 1

            def do_GET(self):
                with server.lock:
                    server.gets += 1
                self._send(200, server.catalog_body)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                with server.lock:
                    server.posts.append({"raw": raw, "body": body, "auth": self.headers["Authorization"]})
                    action = server.script.pop(0) if server.script else "ok"
                if action == "drop":
                    self.close_connection = True
                elif action == "503":
                    self._send(503, {"code": "unavailable", "message": "try later"})
                elif isinstance(action, int):
                    self._send(action, {"code": f"code_{action}", "message": "refused"})
                else:
                    self._send(200, server._answer(body))
                    self.close_connection = action == "close_after"

            def _send(self, status, data):
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler

    def _answer(self, body: dict) -> dict:
        with self.lock:
            if body["batch_id"] not in self.answers:
                items = [{"index": i, "status": "accepted"} for i in range(len(body["reports"]))]
                self.answers[body["batch_id"]] = {
                    "batch_id": body["batch_id"],
                    "accepted": len(items),
                    "rejected": 0,
                    "items": items,
                }
            return self.answers[body["batch_id"]]


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.httpd.shutdown()
    fake.httpd.server_close()


@pytest.fixture
def sleeps():
    return []


def make_client(server, sleeps, **kwargs) -> TelemetryClient:
    kwargs.setdefault("catalog", CATALOG)
    return TelemetryClient(server.url, API_KEY, sleep=sleeps.append, **kwargs)


def spool_files(state_dir) -> list:
    spool = state_dir / "spool"
    return sorted(spool.glob("*.json")) if spool.exists() else []


class SpyOracle:
    """Wraps an oracle and remembers every true index in and wire value out.

    With ``always_lie`` it reports the true index + 1 (mod k), so a true label
    can be searched for in everything that left the client.
    """

    def __init__(self, oracle, always_lie=False):
        self.oracle, self.always_lie = oracle, always_lie
        self.inputs, self.wires = [], []

    def __getattr__(self, name):  # k, q, g, omega, ... for the null reports
        return getattr(self.oracle, name)

    def randomize(self, true_indices):
        self.inputs.extend(int(i) for i in true_indices)
        if self.always_lie:
            return (np.asarray(true_indices) + 1) % self.oracle.k
        return self.oracle.randomize(true_indices)

    def to_wire(self, reports):
        wire = self.oracle.to_wire(reports)
        self.wires.extend(wire)
        return wire


@pytest.fixture
def spy(monkeypatch):
    spies = {}

    def make(protocol, k, epsilon, always_lie=False):
        key = (protocol, k, epsilon)
        if key not in spies:
            spies[key] = SpyOracle(client_module.make_oracle(protocol, k, epsilon), always_lie)
        return spies[key]

    monkeypatch.setattr(client_module, "_oracle", make)
    return spies


# -- what is sent ----------------------------------------------------------------


def test_flush_sends_batches_of_at_most_100_with_fresh_batch_ids(server, sleeps):
    client = make_client(server, sleeps, memoize=False, max_reports_per_metric_per_day=250)
    assert all(client.record("browser", DOMAIN[i % 20], day=DAY) for i in range(250))

    responses = client.flush()

    sizes = [len(body["reports"]) for body in server.bodies()]
    assert sizes == [100, 100, 50]
    assert len({body["batch_id"] for body in server.bodies()}) == 3
    assert sum(response["accepted"] for response in responses) == 250
    assert {post["auth"] for post in server.posts} == {f"Api-Key {API_KEY}"}
    assert client.pending_reports() == 0


def test_batch_size_is_limited_to_the_server_maximum(server, sleeps):
    with pytest.raises(ValueError):
        make_client(server, sleeps, batch_size=101)


@pytest.mark.parametrize("name", ["browser", "olh_metric", "oue_metric", "ss_metric"])
def test_only_the_oracles_output_is_sent(server, sleeps, spy, name):
    client = make_client(server, sleeps, memoize=False, max_reports_per_metric_per_day=30)
    true_indices = [i % 20 for i in range(30)]
    for i in true_indices:
        client.record(name, DOMAIN[i], day=DAY, region="de")
    client.flush()

    (oracle,) = spy.values()
    assert oracle.inputs == true_indices
    reports = server.bodies()[0]["reports"]
    field = "value" if name == "browser" else "payload"
    assert {frozenset(r) for r in reports} == {frozenset({"metric", "version", "day", "region", field})}
    sent = [DOMAIN.index(r["value"]) if field == "value" else r["payload"] for r in reports]
    assert sent == oracle.wires
    assert {r["region"] for r in reports} == {"DE"}


def test_true_value_reaches_neither_request_nor_spool(server, sleeps, tmp_path, monkeypatch):
    domain = ["canary-true-value", "other-a", "other-b"]
    catalog = [metric("canary", domain=domain)]
    monkeypatch.setattr(
        client_module, "_oracle", lambda p, k, e: SpyOracle(client_module.make_oracle(p, k, e), always_lie=True)
    )
    client = make_client(server, sleeps, catalog=catalog, state_dir=tmp_path, max_retries=0)
    server.script = ["503"]
    client.record("canary", "canary-true-value", day=DAY)

    with pytest.raises(FlushError):
        client.flush()
    (spooled,) = spool_files(tmp_path)
    assert b"canary-true-value" not in spooled.read_bytes()
    client.flush()

    assert server.bodies()[-1]["reports"][0]["value"] == "other-a"
    assert all(b"canary-true-value" not in post["raw"] for post in server.posts)


# -- retry, backoff, spool -------------------------------------------------------


def test_503_and_dropped_connection_are_retried_with_the_same_batch(server, sleeps, tmp_path):
    client = make_client(server, sleeps, state_dir=tmp_path)
    client.record("browser", "v3", day=DAY)
    server.script = ["drop", "503", "503", "ok"]

    (response,) = client.flush()

    assert len(server.posts) == 4
    assert len({post["raw"] for post in server.posts}) == 1
    assert response["batch_id"] == server.bodies()[0]["batch_id"]
    assert len(sleeps) == 3
    assert all(lo <= slept <= hi for slept, (lo, hi) in zip(sleeps, [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0)]))
    assert spool_files(tmp_path) == []


def test_backoff_is_capped_and_exhausted_batch_stays_spooled(server, sleeps, tmp_path):
    client = make_client(server, sleeps, state_dir=tmp_path, max_retries=6, backoff_max=2.0)
    client.record("browser", "v3", day=DAY)
    server.script = ["503"] * 7

    with pytest.raises(FlushError) as caught:
        client.flush()

    (error,) = caught.value.errors
    assert (error.code, error.retained) == ("retries_exhausted", True)
    assert len(sleeps) == 6 and max(sleeps) <= 2.0 and sleeps[-1] >= 1.0
    (spooled,) = spool_files(tmp_path)
    assert spooled.name == f"{error.batch_id}.json"

    (response,) = client.flush()
    assert response["batch_id"] == error.batch_id


def test_spool_survives_a_crash_and_a_new_client_resends_it(server, sleeps, tmp_path):
    def crash(_delay):
        raise KeyboardInterrupt

    first = TelemetryClient(server.url, API_KEY, catalog=CATALOG, state_dir=tmp_path, sleep=crash)
    first.record("browser", "v7", day=DAY)
    server.script = ["503"]
    with pytest.raises(KeyboardInterrupt):
        first.flush()
    (spooled,) = spool_files(tmp_path)

    second = make_client(server, sleeps, state_dir=tmp_path)
    (response,) = second.resend_spooled()

    assert second.client_id == first.client_id
    assert server.posts[0]["raw"] == server.posts[1]["raw"]
    assert response["batch_id"] == spooled.stem
    assert spool_files(tmp_path) == []


def test_4xx_drops_only_that_batch(server, sleeps, tmp_path):
    client = make_client(server, sleeps, state_dir=tmp_path, memoize=False, max_reports_per_metric_per_day=150)
    for i in range(150):
        client.record("browser", DOMAIN[i % 20], day=DAY)
    server.script = [400, "ok"]

    with pytest.raises(FlushError) as caught:
        client.flush()

    (error,) = caught.value.errors
    assert (error.code, error.status, error.retained) == ("code_400", 400, False)
    assert len(caught.value.responses) == 1
    assert spool_files(tmp_path) == []
    assert sleeps == []


def test_401_keeps_the_batch_spooled_and_stops(server, sleeps, tmp_path):
    client = make_client(server, sleeps, state_dir=tmp_path, batch_size=1)
    client.record("browser", "v1", day=DAY)
    client.record("olh_metric", "v1", day=DAY)
    server.script = [401]

    with pytest.raises(FlushError) as caught:
        client.flush()

    assert [(e.code, e.retained) for e in caught.value.errors] == [("code_401", True)]
    assert len(server.posts) == 1
    assert len(spool_files(tmp_path)) == 2
    assert len(client.flush()) == 2


def test_stale_keepalive_connection_is_reopened_without_backoff(server, sleeps):
    client = make_client(server, sleeps, max_reports_per_metric_per_day=2, memoize=False)
    server.script = ["close_after"]
    client.record("browser", "v1", day=DAY)
    client.flush()
    time.sleep(0.05)
    client.record("browser", "v2", day=DAY)

    (response,) = client.flush()

    assert response["accepted"] == 1
    assert sleeps == []
    assert (len(server.posts), server.connections) == (2, 2)


# -- local privacy budget ----------------------------------------------------------


def test_daily_cap_per_metric(server, sleeps):
    client = make_client(server, sleeps)
    assert client.record("browser", "v1", day=DAY)
    assert not client.record("browser", "v2", day=DAY)
    assert client.record("olh_metric", "v1", day=DAY)
    assert client.record("browser", "v1", day="2024-05-02")
    client.flush()
    assert sum(len(body["reports"]) for body in server.bodies()) == 3


def test_daily_cap_never_exceeds_the_contribution_bound(server, sleeps):
    client = make_client(server, sleeps, max_reports_per_metric_per_day=5, memoize=False)
    assert [client.record("capped", "v1", day=DAY) for _ in range(3)] == [True, True, False]


def test_memo_only_metric_resends_its_memo(server, sleeps, tmp_path):
    """A metric without report_epsilon (an older server): λ = 1, every report of a value is its memo."""
    client = make_client(server, sleeps, state_dir=tmp_path, max_reports_per_metric_per_day=10)
    for _ in range(5):
        client.record("olh_metric", "v4", day=DAY)
    client.record("olh_metric", "v9", day=DAY)
    client.record("olh_metric", "v4", day="2024-05-02")
    client.flush()

    payloads = [r["payload"] for body in server.bodies() for r in body["reports"]]
    assert len({json.dumps(p) for p in payloads[:5] + payloads[6:]}) == 1
    assert payloads[5] != payloads[0]
    spent = client.privacy_spent("olh_metric", DAY)
    assert (spent.reports, spent.distinct_values, spent.memoized) == (6, 2, True)
    assert (spent.per_report, spent.per_value) == (pytest.approx(2.0), 2.0)
    assert spent.per_change is None and spent.day_epsilon is None  # not bounded when every report is the memo
    assert client.privacy_spent("olh_metric", "2024-05-03").reports == 0

    restarted = make_client(server, sleeps, state_dir=tmp_path, max_reports_per_metric_per_day=10)
    restarted.record("olh_metric", "v4", day="2024-05-03")
    restarted.flush()
    assert server.bodies()[-1]["reports"][0]["payload"] == payloads[0]


@pytest.mark.parametrize("protocol", ["krr", "olh", "oue", "ss"])
def test_each_report_is_the_memo_with_the_keep_probability(server, sleeps, tmp_path, protocol):
    """1,500 reports of one value: the share equal to the memo is λ + (1 - λ) P_null(memo), P_null being the
    chance that a null report equals the memo. Tolerance 5 binomial SDs (false alarm ~ 6e-7)."""
    draws = 1500
    spec = metric("m", protocol, report_epsilon=1.0, domain=DOMAIN[:6], bound=draws)
    client = make_client(server, sleeps, catalog=[spec], state_dir=tmp_path, max_reports_per_metric_per_day=draws)
    for _ in range(draws):
        assert client.record("m", "v2", day=DAY)
    reports = client._queue
    wires = [json.dumps(r.get("payload", r.get("value"))) for r in reports]
    with client._state.locked() as state:
        stored = state.memo_get("m", 1, 2)
    stored_wire = json.dumps(DOMAIN[stored] if protocol == "krr" else stored)
    guarantees_ = client.metric("m").guarantees
    assert 0 < guarantees_.keep < 1 and guarantees_.per_report == pytest.approx(1.0)
    share = sum(w == stored_wire for w in wires) / draws
    oracle = client_module.make_oracle(protocol, 6, 2.0)
    null_hit = {"krr": lambda: 1 / 6, "ss": lambda: 1 / math.comb(6, oracle.omega), "olh": lambda: 0.0,
                "oue": lambda: math.prod(oracle.q if bit == "1" else 1 - oracle.q for bit in stored)}[protocol]()
    expected = guarantees_.keep + (1 - guarantees_.keep) * null_hit
    assert abs(share - expected) < 5 * math.sqrt(expected * (1 - expected) / draws)
    assert len(set(wires)) > 1
    spent = client.privacy_spent("m", DAY)
    assert (spent.per_value, spent.per_report) == (2.0, pytest.approx(1.0))
    assert spent.per_change == pytest.approx(guarantees_.per_change)
    assert spent.day_epsilon == pytest.approx(draws * guarantees_.per_change)


def test_without_memoization_every_report_is_charged(server, sleeps):
    client = make_client(server, sleeps, memoize=False, max_reports_per_metric_per_day=3)
    results = [client.record("olh_metric", "v4", day=DAY) for _ in range(4)]
    assert results == [True, True, True, False]
    spent = client.privacy_spent("olh_metric", DAY)
    assert (spent.per_report, spent.per_value, spent.per_change, spent.day_epsilon) == (2.0, 6.0, 2.0, 6.0)
    assert client.privacy_spent("olh_metric", "2024-05-02").day_epsilon == 0


def test_caps_and_client_id_persist_across_restarts(server, sleeps, tmp_path):
    first = make_client(server, sleeps, state_dir=tmp_path)
    first.record("browser", "v1", day=DAY)
    second = make_client(server, sleeps, state_dir=tmp_path)
    assert not second.record("browser", "v1", day=DAY)
    assert second.client_id == first.client_id
    assert len(first.client_id) == 32 and int(first.client_id, 16) >= 0  # 128 random bits
    assert second.privacy_spent("browser", DAY).per_value == pytest.approx(2.0)
    assert os.stat(tmp_path / "state.json").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "state.lock").st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# -- one state_dir, several processes --------------------------------------------------


def _record_in_process(state_dir, barrier, day, results):
    client = TelemetryClient("http://127.0.0.1:9", API_KEY, catalog=CATALOG, state_dir=state_dir)
    barrier.wait()  # every client has read the state before anyone records
    recorded = client.record("browser", "v5", day=day)
    results.put((day, recorded, client._queue[0]["value"] if client._queue else None))


def _race(state_dir, days):
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(len(days)), context.Queue()
    workers = [context.Process(target=_record_in_process, args=(state_dir, barrier, day, results)) for day in days]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    return outcomes


def test_processes_sharing_a_state_dir_never_pass_the_cap_together(tmp_path):
    outcomes = _race(tmp_path, [DAY] * 6)
    assert sorted(recorded for _, recorded, _ in outcomes) == [False] * 5 + [True]
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["days"][DAY]["browser"]["reports"] == 1


def test_processes_sharing_a_state_dir_draw_one_memo_and_lose_no_update(tmp_path):
    days = [f"2024-05-{d:02d}" for d in range(1, 7)]
    outcomes = _race(tmp_path, days)
    assert all(recorded for _, recorded, _ in outcomes)
    assert len({value for _, _, value in outcomes}) == 1  # λ = 1: every day sends the one memo
    state = json.loads((tmp_path / "state.json").read_text())
    assert sorted(day for day in state["days"]) == days


def test_threads_sharing_a_state_dir_never_pass_the_cap_together(server, sleeps, tmp_path):
    clients = [make_client(server, sleeps, state_dir=tmp_path) for _ in range(8)]
    barrier, results = threading.Barrier(8), []

    def record(client):
        barrier.wait()
        results.append(client.record("browser", "v1", day=DAY))

    threads = [threading.Thread(target=record, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 7 + [True]


# -- refused before spending -----------------------------------------------------------


def test_what_the_server_would_reject_is_refused_before_spending(server, sleeps):
    today = datetime.now(timezone.utc).date()
    catalog = {"metrics": CATALOG, "regions": ["DE", "US"], "report_max_age_days": 7}
    client = make_client(server, sleeps, catalog=catalog)
    for kwargs in ({"region": "FR"}, {"day": today - timedelta(days=8)}, {"day": today + timedelta(days=1)}):
        with pytest.raises(ValueError):
            client.record("browser", "v1", **kwargs)
    assert client.privacy_spent("browser", today).reports == 0
    assert client.privacy_spent("browser", today - timedelta(days=8)).reports == 0
    assert client.record("browser", "v1", region="de", day=today - timedelta(days=7))
    assert client.record("browser", "v1", region="US")
    assert client.pending_reports() == 2


def test_the_servers_regions_and_max_age_come_with_the_catalog(server, sleeps, monkeypatch):
    monkeypatch.setattr(server, "catalog_body", {"metrics": CATALOG, "regions": ["DE"], "report_max_age_days": 0})
    client = TelemetryClient(server.url, API_KEY, sleep=sleeps.append)
    with pytest.raises(ValueError, match="region"):
        client.record("browser", "v1", region="US")
    with pytest.raises(ValueError, match="days old"):
        client.record("browser", "v1", day=datetime.now(timezone.utc).date() - timedelta(days=1))
    assert client.record("browser", "v1", region="DE")


def test_a_metric_above_the_ceiling_is_refused(server, sleeps, tmp_path):
    catalog = [metric("strong", epsilon=4.0), metric("weak", epsilon=4.5)]
    client = make_client(server, sleeps, catalog=catalog, state_dir=tmp_path)
    assert client.record("strong", "v1", day=DAY)
    with pytest.raises(PrivacyRefused) as caught:
        client.record("weak", "v1", day=DAY)
    assert caught.value.code == "epsilon_above_ceiling"
    assert client.privacy_spent("weak", DAY).reports == 0 and client.pending_reports() == 1
    assert make_client(server, sleeps, catalog=catalog, max_local_epsilon=5).record("weak", "v1", day=DAY)
    with pytest.raises(ValueError):
        client.accept_epsilon("weak", 4.5)


def test_a_change_ceiling_refuses_memo_only_metrics(server, sleeps):
    catalog = [metric("memo_only"), metric("perturbed", report_epsilon=1.0)]
    client = make_client(server, sleeps, catalog=catalog, max_change_epsilon=3.0)
    with pytest.raises(PrivacyRefused) as caught:
        client.record("memo_only", "v1", day=DAY)
    assert caught.value.code == "change_epsilon_above_ceiling"
    assert client.record("perturbed", "v1", day=DAY)  # k-RR k = 20, ε = 2, report ε = 1: per change 2.37


@pytest.mark.parametrize("raised", [{"epsilon": 3.0, "report_epsilon": 1.0}, {"epsilon": 2.0, "report_epsilon": 1.5}])
def test_a_raised_epsilon_needs_the_apps_consent(server, sleeps, tmp_path, raised):
    before = [metric("m", report_epsilon=1.0)]
    after = [metric("m", version=2, **raised)]
    assert make_client(server, sleeps, catalog=before, state_dir=tmp_path).record("m", "v1", day=DAY)

    client = make_client(server, sleeps, catalog=after, state_dir=tmp_path)
    with pytest.raises(PrivacyRefused) as caught:
        client.record("m", "v1", day="2024-05-02")
    assert caught.value.code == "epsilon_raised"
    assert client.privacy_spent("m", "2024-05-02").reports == 0
    client.accept_epsilon("m", raised["epsilon"], raised["report_epsilon"])
    assert client.record("m", "v1", day="2024-05-02")
    # A lower ε is always fine, and the consent persists.
    assert make_client(server, sleeps, catalog=before, state_dir=tmp_path).record("m", "v1", day="2024-05-03")
    assert make_client(server, sleeps, catalog=after, state_dir=tmp_path).record("m", "v1", day="2024-05-04")


def test_corrupt_state_is_refused_not_reset(server, sleeps, tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(TelemetryError) as caught:
        make_client(server, sleeps, state_dir=tmp_path)
    assert caught.value.code == "state_corrupt"


# -- catalog and input validation --------------------------------------------------


def test_catalog_is_fetched_once(server, sleeps):
    client = TelemetryClient(server.url, API_KEY, sleep=sleeps.append)
    client.record("browser", "v1")
    client.record("olh_metric", "v1")
    assert server.gets == 1
    with pytest.raises(ValueError):
        client.record("no_such_metric", "v1")
    assert server.gets == 1  # refetches for unknown names are rate-limited


def test_bad_input_is_rejected(server, sleeps):
    client = make_client(server, sleeps)
    for kwargs in ({"metric": "nope", "value": "v1"}, {"metric": "browser", "value": "v99"}):
        with pytest.raises(ValueError):
            client.record(**kwargs)
    with pytest.raises(ValueError):
        client.record("browser", "v1", region="DEU")
    with pytest.raises(ValueError):
        client.record("browser", "v1", day="20240501")
    assert client.pending_reports() == 0


def test_default_day_is_today_utc(server, sleeps):
    client = make_client(server, sleeps)
    client.record("browser", "v1")
    client.flush()
    day = date.fromisoformat(server.bodies()[0]["reports"][0]["day"])
    assert abs(day - date.today()) <= timedelta(days=1)


# -- simulate ----------------------------------------------------------------------


def test_simulate_population_uses_distinct_clients_and_few_connections(server):
    result = simulate_population(
        server.url, API_KEY, {"v1": 150, "v2": 50}, "browser", 200, DAY, region="US", workers=4
    )

    assert (result["accepted"], result["rejected"], result["errors"]) == (200, 0, 0)
    assert result["true_counts"] == {"v1": 150, "v2": 50}
    assert len({body["client_id"] for body in server.bodies()}) == 200
    assert {len(body["reports"]) for body in server.bodies()} == {1}
    assert server.gets == 1
    assert server.connections <= 5


def test_simulate_population_draws_from_weights(server):
    result = simulate_population(server.url, API_KEY, {"v1": 0.7, "v2": 0.3}, "browser", 50, DAY, seed=1)
    assert sum(result["true_counts"].values()) == 50
    assert result["accepted"] == 50
