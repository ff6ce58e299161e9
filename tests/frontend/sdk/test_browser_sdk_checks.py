"""The browser SDK (frontend/static/frontend/sdk/privtel.js) in Chromium, against privacy/ldp.

The client checks (batching, retries under one batch_id, the localStorage spool, caps, memoization,
ceilings, rejection sampling) are in ``checks.mjs`` and run in the page with a fake fetch. The cross-check
asks the SDK for its parameters, OLH hashes, Bernoulli thresholds and reports, and compares them with the
server's oracles: equal integers exactly, floating-point parameters to 1e-12 relative (the browser's and
libm's ``exp`` may differ in the last bit, which moves nothing the server decodes).
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from privacy.ldp import PROTOCOLS, PayloadError, make_oracle, olh_hash
from privacy.ldp.longitudinal import composed_oracle, guarantees

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[3]
SDK = REPO / "frontend/static/frontend/sdk/privtel.js"
SERVED = ("frontend/static/frontend/sdk/", "tests/frontend/sdk/")
CHECKS = re.findall(r"^export async function (\w+)", (Path(__file__).with_name("checks.mjs")).read_text(), re.M)


# The SDK's own checks need no Django: a static server of the SDK and checks.mjs, a page on it, and
# tests/frontend/conftest.py's ``browser`` (Debian's Chromium through Playwright).
class _SdkFiles(SimpleHTTPRequestHandler):
    """The SDK and its checks as JavaScript modules, a blank page at /, nothing else."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript"}

    def do_GET(self):
        path = self.path.split("?")[0].lstrip("/")
        if path == "":
            body = b"<!doctype html><title>privtel sdk checks</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path.startswith(SERVED) and ".." not in path:
            super().do_GET()
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def sdk_origin():
    """Base URL of a static server of the SDK and its checks."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_SdkFiles, directory=str(REPO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def checks_page(browser, sdk_origin):
    """A page on the static server; ``page.evaluate`` can import ``/tests/frontend/sdk/checks.mjs``."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(sdk_origin + "/")
    yield page
    context.close()


def run_in_page(page, expression: str, *args):
    """Import checks.mjs in the page and evaluate ``expression`` (with ``m`` the module, ``a`` the argument)."""
    script = f"async (a) => {{ const m = await import('/tests/frontend/sdk/checks.mjs'); return {expression}; }}"
    return page.evaluate(script, *args)


@pytest.mark.parametrize("name", CHECKS)
def test_client_check_in_chromium(checks_page, name):
    run_in_page(checks_page, f"await m.{name}()")


@pytest.mark.parametrize("needle", ["Math.random", "Math.floor(Math.random", "% upper"])
def test_the_sdk_draws_only_from_getrandomvalues(needle):
    source = SDK.read_text()
    assert needle not in source
    assert source.count("getRandomValues(") == 1  # the one source of randomness: CryptoRandom.uint32


def _cases() -> dict:
    draw = secrets.SystemRandom()
    params = [[protocol, k, epsilon, per_report]
              for protocol in PROTOCOLS for k in (2, 3, 5, 8, 20, 64, 1000)
              for epsilon in (0.1, 0.5, 1.0, math.log(3), 2.0, 3.0, 4.0, 8.0)
              for per_report in (epsilon, epsilon / 2, epsilon / 10)]
    hashes = [[draw.randrange(2**32), draw.randrange(2**16), draw.choice((2, 3, 8, 21, 1000, 2**31))] for _ in range(2000)]
    hashes += [[0, 0, 2], [2**32 - 1, 2**16 - 1, 2**32 - 1], [2**32 - 1, 0, 1 + round(math.exp(20))]]
    thresholds = [0.0, 1.0, 0.5, 1 / 3, 2**-53, 1 - 2**-53, 3 * 2**-55] + [draw.random() / draw.choice((1, 7, 1e6)) for _ in range(500)]
    reports = [["krr", 20, 2.0, 300], ["oue", 20, 2.0, 300], ["olh", 20, 2.0, 300], ["olh", 50, 4.0, 300],
               ["ss", 20, 1.0, 300], ["ss", 7, 0.5, 300]]
    return {"params": params, "hashes": hashes, "thresholds": thresholds, "reports": reports}


@pytest.fixture(scope="module")
def crossed(checks_page):
    cases = _cases()
    return cases, run_in_page(checks_page, "m.crossCheck(a)", cases)


def test_parameters_equal_the_servers(crossed):
    cases, seen = crossed
    for (protocol, k, epsilon, per_report), js in zip(cases["params"], seen["params"]):
        oracle = make_oracle(protocol, k, epsilon)
        assert js["g"] == getattr(oracle, "g", None) and js["omega"] == getattr(oracle, "omega", None)
        assert js["p"] == pytest.approx(oracle.p, rel=1e-12) and js["q"] == pytest.approx(oracle.q, rel=1e-12)
        expected = guarantees(protocol, k, epsilon, per_report)
        assert js["keep"] == pytest.approx(expected.keep, rel=1e-9)
        assert js["per_report"] == pytest.approx(expected.per_report, rel=1e-9)
        if math.isinf(expected.per_change):
            assert js["per_change"] is None
        else:
            assert js["per_change"] == pytest.approx(expected.per_change, rel=1e-9)
        composed = composed_oracle(protocol, k, epsilon, per_report)
        assert js["composed_p"] == pytest.approx(composed.p, rel=1e-9)
        assert js["composed_q"] == pytest.approx(composed.q, rel=1e-9)


def test_olh_hashes_equal_the_servers(crossed):
    cases, seen = crossed
    seeds, values, gs = (np.array(column, dtype=np.int64) for column in zip(*cases["hashes"]))
    expected = [int(olh_hash(np.array([s]), np.array([v]), int(g))[0]) for s, v, g in zip(seeds, values, gs)]
    assert seen["hashes"] == expected


def test_bernoulli_thresholds_equal_the_servers(crossed):
    cases, seen = crossed
    # privacy/csprng.py's bernoulli: a uniform 53-bit integer below round(p * 2**53)
    assert seen["thresholds"] == [round(p * 2**53) for p in cases["thresholds"]]


def test_the_server_decodes_every_report_the_sdk_makes(crossed):
    cases, seen = crossed
    for (protocol, k, epsilon, _), made in zip(cases["reports"], seen["reports"]):
        oracle = make_oracle(protocol, k, epsilon)
        for report in made:
            wire = report["wire"]
            parsed = oracle.parse_wire(wire)
            if protocol == "ss":
                assert wire == sorted(wire)  # the order of a set reveals nothing
            supports = oracle.support_counts(np.asarray(parsed)[None, ...])
            assert np.flatnonzero(supports).tolist() == report["supports"]


def test_a_malformed_report_is_still_refused_by_the_server():
    """The decode test above is not vacuous: parse_wire refuses what the SDK never makes."""
    with pytest.raises(PayloadError):
        make_oracle("ss", 20, 1.0).parse_wire([3, 3, 4, 5])
    with pytest.raises(PayloadError):
        make_oracle("olh", 20, 2.0).parse_wire([2**32, 1])
