"""Reports per second of the browser SDK in Chromium against the Python SDK, as one JSON line.

    python tests/benchmarks/bench_browser_sdk.py [--reports 20000]

For each protocol (k = 20, ε = 2, report ε = 1): ``randomize`` is the oracle's permanent report alone
(``makeOracle(...).randomize`` in the page); ``record`` is ``TelemetryClient.record`` end to end, without
memoization (a fresh permanent report and the instantaneous step each time), with its state in the page's
localStorage and a fixed catalog. The baseline, measured in the same run, is the Python SDK's
``TelemetryClient.record`` (no state_dir, the same catalog), which draws through numpy one report at a time.
Needs /usr/bin/chromium and Playwright.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from privacy.ldp import PROTOCOLS  # noqa: E402
from telemetry.sdk import TelemetryClient  # noqa: E402

K, EPSILON, REPORT_EPSILON = 20, 2.0, 1.0
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

MEASURE = """async ({n, protocol, k, epsilon, perReport}) => {
  const sdk = await import("/frontend/static/frontend/sdk/privtel.js");
  const oracle = sdk.makeOracle(protocol, k, epsilon);
  let start = performance.now();
  for (let i = 0; i < n; i++) oracle.randomize(i % k);
  const randomizeS = (performance.now() - start) / 1000;
  const domain = Array.from({length: k}, (_, i) => `v${i}`);
  const catalog = [{name: "m", version: 1, domain, epsilon, report_epsilon: perReport, protocol, contribution_bound: n}];
  localStorage.clear();
  const client = new sdk.TelemetryClient(location.origin, "unused", {catalog, memoize: false, maxReportsPerMetricPerDay: n});
  start = performance.now();
  for (let i = 0; i < n; i++) await client.record("m", domain[i % k]);
  const recordS = (performance.now() - start) / 1000;
  return {randomize_per_s: n / randomizeS, record_per_s: n / recordS};
}"""


def python_record_per_s(protocol: str, n: int) -> float:
    domain = [f"v{i}" for i in range(K)]
    catalog = [{"name": "m", "version": 1, "domain": domain, "epsilon": EPSILON, "report_epsilon": REPORT_EPSILON,
                "protocol": protocol, "contribution_bound": n}]
    client = TelemetryClient("http://127.0.0.1:9", "unused", catalog=catalog, memoize=False,
                             max_reports_per_metric_per_day=n)
    start = time.perf_counter()
    for i in range(n):
        client.record("m", domain[i % K])
    return n / (time.perf_counter() - start)


class _Files(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def do_GET(self):
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>bench</title>")
        elif self.path == "/frontend/static/frontend/sdk/privtel.js":
            super().do_GET()
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=20_000)
    n = parser.parse_args().reports
    from playwright.sync_api import sync_playwright

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Files, directory=str(REPO)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    result = {"benchmark": "browser_sdk_reports_per_s", "k": K, "epsilon": EPSILON, "report_epsilon": REPORT_EPSILON,
              "reports": n}
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
            result["chromium"] = browser.version
            for protocol in PROTOCOLS:
                seen = page.evaluate(MEASURE, {"n": n, "protocol": protocol, "k": K, "epsilon": EPSILON,
                                               "perReport": REPORT_EPSILON})
                python = python_record_per_s(protocol, min(n, 5_000))
                result[protocol] = {"js_randomize_per_s": round(seen["randomize_per_s"]),
                                    "js_record_per_s": round(seen["record_per_s"]),
                                    "python_sdk_record_per_s": round(python),
                                    "js_record_vs_python_sdk": round(seen["record_per_s"] / python, 2)}
            browser.close()
    finally:
        server.shutdown()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
