"""20,000 reports per protocol, randomized in Chromium by the browser SDK, fit the protocol's distribution.

Tolerance: every fit (``sdk_stats.py`` says which statistic and how many degrees of freedom) rejects
at p-value < 1e-4, so a correct SDK fails one of these tests about once in 10,000 runs per fit. Power:
the same fits, on 20,000 reports from a generator with ε 10% off (or, for the longitudinal channel, one
that skips the instantaneous step), reject: ``test_the_fits_reject_a_biased_generator``.

The reports are made in a page of the app (the SDK as the app serves it) by ``makeOracle(...).randomize``
(the permanent report of each protocol) and, for the composed longitudinal channel, by
``TelemetryClient.record`` without memoization, which is what the server sees from a population.
"""

from __future__ import annotations

import numpy as np
import pytest
from sdk_stats import REJECT_BELOW, krr_fit, krr_probabilities, olh_fit, oue_fit, ss_fit

from privacy.ldp import make_oracle, olh_hash
from privacy.ldp.longitudinal import composed_oracle


N = 20_000
V = 3  # the true value of every report
CASES = {  # name: (protocol, k, ε, per-report ε)
    "krr": ("krr", 8, 2.0, 2.0),
    "oue": ("oue", 8, 1.0, 1.0),
    "olh": ("olh", 20, 2.0, 2.0),
    "ss": ("ss", 10, 1.0, 1.0),  # ω = round(10 / (e + 1)) = 3: C(10, 3) = 120 subsets, >= 110 expected in each
    "krr-longitudinal": ("krr", 8, 2.0, 1.0),
}

GENERATE = """async ({sdkUrl, n, v, protocol, k, epsilon, perReport, composed}) => {
  const sdk = await import(sdkUrl);
  if (!composed) {
    const oracle = sdk.makeOracle(protocol, k, epsilon);
    return Array.from({length: n}, () => oracle.randomize(v));
  }
  const domain = Array.from({length: k}, (_, i) => `v${i}`);
  const catalog = [{name: "m", version: 1, domain, epsilon, report_epsilon: perReport, protocol, contribution_bound: n}];
  const items = new Map();
  const storage = {getItem: (key) => items.get(key) ?? null, setItem: (key, value) => items.set(key, value),
                   removeItem: (key) => items.delete(key)};
  const sent = [];
  const fetch = async (url, init) => { sent.push(...JSON.parse(init.body).reports);
    return {status: 200, text: async () => "{}", headers: {get: () => null}}; };
  const client = new sdk.TelemetryClient(location.origin, "unused", {catalog, storage, fetch, memoize: false,
                                                                     maxReportsPerMetricPerDay: n, storageKey: "stats"});
  for (let i = 0; i < n; i++) await client.record("m", domain[v]);
  await client.flush();
  return sent.map((report) => domain.indexOf(report.value));
}"""


def fits(name: str, reports) -> list[tuple[float, int, float]]:
    protocol, k, epsilon, per_report = CASES[name]
    oracle = composed_oracle(protocol, k, epsilon, per_report)  # the base oracle when per_report == epsilon
    if protocol == "krr":
        return [krr_fit(reports, k, V, oracle.p, oracle.q)]
    if protocol == "oue":
        return [oue_fit(reports, V, oracle.p, oracle.q)]
    if protocol == "olh":
        return list(olh_fit(reports, oracle, V))
    inclusion = sum(V in report for report in reports)
    return [ss_fit(reports, k, oracle.omega, V, oracle.p), krr_fit([0] * (len(reports) - inclusion) + [1] * inclusion,
                                                                    2, 1, oracle.p, 1 - oracle.p)]


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", CASES)
def test_20000_reports_fit_the_protocol(page, name):
    page.goto("/login")  # a page of the app (on the live server), which serves the SDK
    protocol, k, epsilon, per_report = CASES[name]
    reports = page.evaluate(GENERATE, {"sdkUrl": "/static/frontend/sdk/privtel.js", "n": N, "v": V, "protocol": protocol, "k": k,
                                       "epsilon": epsilon, "perReport": per_report, "composed": per_report != epsilon})
    assert len(reports) == N
    for statistic, df, p_value in fits(name, reports):
        assert p_value >= REJECT_BELOW, f"{name}: chi2 = {statistic:.1f} with df = {df}, p = {p_value:.2e}"


def _biased(name: str, rng: np.random.Generator):
    """N reports from a wrong generator: ε 10% too high, or the longitudinal step skipped."""
    protocol, k, epsilon, per_report = CASES[name]
    if name == "krr-longitudinal":
        base = make_oracle(protocol, k, epsilon)  # the memo sent every time: p, q instead of p', q'
        return rng.choice(k, N, p=krr_probabilities(k, V, base.p, base.q)).tolist()
    right, wrong = make_oracle(protocol, k, epsilon), make_oracle(protocol, k, epsilon * 1.1)
    if protocol == "krr":
        return rng.choice(k, N, p=krr_probabilities(k, V, wrong.p, wrong.q)).tolist()
    if protocol == "oue":
        rates = np.full(k, wrong.q)
        rates[V] = wrong.p
        return ["".join("1" if bit else "0" for bit in row) for row in rng.random((N, k)) < rates]
    if protocol == "olh":  # the server's g, with p = e^ε'/(e^ε' + g - 1) at the wrong ε'
        wrong_p = np.exp(epsilon * 1.1) / (np.exp(epsilon * 1.1) + right.g - 1)
        seeds = rng.integers(0, 2**32, N)
        hashed = olh_hash(seeds, np.full(N, V), right.g)
        other = rng.integers(0, right.g - 1, N)
        other += other >= hashed
        keep = rng.random(N) < wrong_p
        return np.column_stack([seeds, np.where(keep, hashed, other)]).tolist()
    others = [u for u in range(k) if u != V]  # ss: the server's ω with the wrong p
    reports = []
    for include in rng.random(N) < wrong.p:
        chosen = list(rng.choice(others, right.omega - include, replace=False)) + ([V] if include else [])
        reports.append(sorted(int(u) for u in chosen))
    return reports


@pytest.mark.parametrize("name", CASES)
def test_the_fits_reject_a_biased_generator(name):
    rng = np.random.default_rng(20261130)  # not privacy noise: a fixed, deliberately wrong test generator
    p_values = [p_value for _, _, p_value in fits(name, _biased(name, rng))]
    assert min(p_values) < REJECT_BELOW, p_values
