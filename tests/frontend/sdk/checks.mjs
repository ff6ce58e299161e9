// Checks of the browser SDK that need no server: run in Chromium by tests/frontend/sdk/test_browser_sdk_checks.py
// (and under Node while developing: `node tests/frontend/sdk/run_checks.mjs`). Each exported check throws
// on failure; `crossCheck` returns what the SDK computes so that Python compares it with privacy/ldp.
import * as sdk from "../../../frontend/static/frontend/sdk/privtel.js";

function assert(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

function assertEqual(actual, expected, message) {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  assert(a === e, `${message}: got ${a}, expected ${e}`);
}

async function rejects(promise, predicate, message) {
  try {
    await promise;
  } catch (error) {
    assert(predicate(error), `${message}: wrong error ${error}`);
    return;
  }
  throw new Error(`check failed: ${message}: did not reject`);
}

class Storage {
  constructor() { this.items = new Map(); }
  getItem(key) { return this.items.has(key) ? this.items.get(key) : null; }
  setItem(key, value) { this.items.set(key, String(value)); }
  removeItem(key) { this.items.delete(key); }
}

/** A fake fetch: answers each request with the next of `script` (a status, "network", or a function). */
function fakeFetch(script) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, method: init.method, body: init.body ? JSON.parse(init.body) : null, headers: init.headers });
    const step = script.length > 1 ? script.shift() : script[0];
    if (step === "network") throw new TypeError("Failed to fetch");
    const status = typeof step === "function" ? step(calls.at(-1)) : step;
    const body = status === 200 ? { accepted: 1 } : { code: `code_${status}`, message: "m" };
    return { status, text: async () => JSON.stringify(body), headers: { get: () => null } };
  };
  return { fetch, calls };
}

const CATALOG = {
  metrics: [
    { name: "color", version: 1, domain: ["red", "green", "blue"], epsilon: 2, report_epsilon: 1, protocol: "krr", contribution_bound: 1 },
    { name: "bits", version: 2, domain: ["a", "b", "c", "d", "e"], epsilon: 1, report_epsilon: 1, protocol: "oue", contribution_bound: 500 },
    { name: "hashed", version: 1, domain: ["a", "b", "c", "d"], epsilon: 2, report_epsilon: 2, protocol: "olh", contribution_bound: 3 },
    { name: "sets", version: 1, domain: ["a", "b", "c", "d", "e", "f"], epsilon: 1, report_epsilon: 0.5, protocol: "ss", contribution_bound: 1 },
  ],
  regions: ["DE", "US"],
  report_max_age_days: 7,
};

function client(options = {}) {
  const { fetch, calls } = fakeFetch(options.script ?? [200]);
  const made = new sdk.TelemetryClient("http://telemetry.test/", "key-1", {
    catalog: CATALOG, storage: options.storage ?? new Storage(), fetch, sleep: async () => {}, ...options.extra,
  });
  return { client: made, calls };
}

const daysAgo = (n) => new Date(Date.now() - n * 86_400_000).toISOString().slice(0, 10);

// --- checks ----------------------------------------------------------------------------------------

export async function batchesHoldAtMost100ReportsWithFreshIds() {
  const { client: c, calls } = client({ extra: { maxReportsPerMetricPerDay: 1000 } });
  for (let i = 0; i < 250; i++) assert(await c.record("bits", "c"), "recorded");
  assertEqual(c.pendingReports(), 250, "queued");
  const responses = await c.flush();
  assertEqual(calls.map((call) => call.body.reports.length), [100, 100, 50], "batch sizes");
  assertEqual(new Set(calls.map((call) => call.body.batch_id)).size, 3, "distinct batch ids");
  assert(calls.every((call) => /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(call.body.batch_id)), "uuid4 ids");
  assert(calls.every((call) => call.url === "http://telemetry.test/api/v1/reports" && call.headers.Authorization === "Api-Key key-1"), "endpoint and key");
  assert(calls.every((call) => call.body.client_id === c.clientId && /^[0-9a-f]{32}$/.test(c.clientId)), "client id");
  assertEqual(responses.length, 3, "responses");
  assertEqual(c.spooledBatches(), [], "spool emptied");
}

export async function retriesKeepTheBatchId() {
  const delays = [];
  const { client: c, calls } = client({ script: ["network", 503, 429, 200], extra: { sleep: async (ms) => delays.push(ms) } });
  await c.record("color", "green", { region: "de" });
  await c.flush();
  assertEqual(calls.length, 4, "attempts");
  assertEqual(new Set(calls.map((call) => JSON.stringify(call.body))).size, 1, "same batch_id and body on every attempt");
  const report = calls[0].body.reports[0];
  assertEqual(Object.keys(report).sort(), ["day", "metric", "region", "value", "version"], "k-RR report fields");
  assert(CATALOG.metrics[0].domain.includes(report.value) && report.region === "DE", "k-RR value is a label");
  // backoff 500 * 2^i ms with jitter in its upper half
  delays.forEach((ms, i) => assert(ms >= 250 * 2 ** i && ms <= 500 * 2 ** i, `delay ${i}: ${ms}`));
}

export async function unsentBatchesSurviveInStorage() {
  const storage = new Storage();
  const first = client({ storage, script: ["network"], extra: { maxRetries: 1 } });
  await first.client.record("color", "red");
  await rejects(first.client.flush(), (e) => e instanceof sdk.FlushError && e.errors[0].retained && e.errors[0].code === "retries_exhausted", "kept");
  const [spooled] = first.client.spooledBatches();
  assertEqual(first.calls.length, 2, "one try and one retry");
  // A new page on the same storage: same client id, the batch resent unchanged.
  const second = client({ storage, script: [200] });
  assertEqual(second.client.clientId, first.client.clientId, "client id persists");
  await second.client.resendSpooled();
  assertEqual(second.calls[0].body, spooled, "resent body");
  assertEqual(second.client.spooledBatches(), [], "acknowledged");
}

export async function authErrorsKeepTheBatchOtherErrorsDropIt() {
  const storage = new Storage();
  const auth = client({ storage, script: [401], extra: { maxReportsPerMetricPerDay: 5 } });
  await auth.client.record("bits", "a");
  await auth.client.record("bits", "b");
  await rejects(auth.client.flush(), (e) => e.errors.length === 1 && e.errors[0].retained && e.errors[0].status === 401, "401 stops, keeps");
  const bad = client({ storage, script: [400] });
  await rejects(bad.client.resendSpooled(), (e) => e.errors[0].code === "code_400" && !e.errors[0].retained, "400 drops");
  assertEqual(bad.client.spooledBatches(), [], "dropped");
}

export async function dailyCapIsTheLesserOfTheClientsAndTheMetricsBound() {
  const { client: c } = client({ extra: { maxReportsPerMetricPerDay: 2 } });
  assert(await c.record("color", "red"), "first");
  assert(!(await c.record("color", "blue")), "contribution_bound 1 caps the day");
  assert(await c.record("color", "blue", { day: daysAgo(1) }), "another day");
  assert(await c.record("hashed", "a") && await c.record("hashed", "b"), "two of hashed");
  assert(!(await c.record("hashed", "c")), "the client's own cap of 2");
  assertEqual(c.pendingReports(), 4, "four queued");
  const spent = c.privacySpent("hashed");
  assertEqual([spent.reports, spent.distinctValues, spent.perValue, spent.perChange, spent.dayEpsilon], [2, 2, 2, null, null], "figures at keep 1");
}

export async function memoizedReportsRepeatTheMemo() {
  // keep = 1 (report_epsilon = epsilon): every report of a value is its memo.
  const { client: c, calls } = client({ extra: { maxReportsPerMetricPerDay: 3 } });
  for (let d = 0; d < 3; d++) for (const v of ["a", "b"]) await c.record("hashed", v, { day: daysAgo(d) });
  await c.flush();
  const payloads = calls[0].body.reports.map((r) => JSON.stringify(r.payload));
  assertEqual(new Set([payloads[0], payloads[2], payloads[4]]).size, 1, "a's memo");
  assertEqual(new Set([payloads[1], payloads[3], payloads[5]]).size, 1, "b's memo");
  // Without memoization every report is a fresh draw (32-bit seeds: equal with probability 2^-32).
  const fresh = client({ extra: { memoize: false, maxReportsPerMetricPerDay: 3 } });
  for (let d = 0; d < 3; d++) await fresh.client.record("hashed", "a", { day: daysAgo(d) });
  await fresh.client.flush();
  assertEqual(new Set(fresh.calls[0].body.reports.map((r) => r.payload[0])).size, 3, "fresh seeds");
}

export async function ceilingsAndRaisesAreRefusedBeforeSpending() {
  const storage = new Storage();
  const low = client({ storage, extra: { maxLocalEpsilon: 1.5 } });
  await rejects(low.client.record("color", "red"), (e) => e instanceof sdk.PrivacyRefused && e.code === "epsilon_above_ceiling", "ceiling");
  const change = client({ storage, extra: { maxChangeEpsilon: 1 } });
  await rejects(change.client.record("sets", "a"), (e) => e.code === "change_epsilon_above_ceiling", "change ceiling");
  assertEqual(low.client.privacySpent("color").reports, 0, "nothing spent");
  const before = client({ storage });
  await before.client.record("color", "red");
  const raised = { ...CATALOG, metrics: [{ ...CATALOG.metrics[0], version: 2, epsilon: 3 }] };
  const after = new sdk.TelemetryClient("http://telemetry.test", "k", { catalog: raised, storage, fetch: fakeFetch([200]).fetch });
  await rejects(after.record("color", "red", { day: daysAgo(1) }), (e) => e.code === "epsilon_raised", "raised");
  await after.acceptEpsilon("color", 3, 1);
  assert(await after.record("color", "red", { day: daysAgo(1) }), "accepted");
}

export async function whatTheServerWouldRejectIsRefused() {
  const { client: c } = client();
  await rejects(c.record("nope", "x"), (e) => e instanceof RangeError, "unknown metric");
  await rejects(c.record("color", "purple"), (e) => e instanceof RangeError, "out of domain");
  await rejects(c.record("color", "red", { day: daysAgo(-1) }), (e) => /after today/.test(e.message), "future day");
  await rejects(c.record("color", "red", { day: daysAgo(8) }), (e) => /days old/.test(e.message), "too old");
  await rejects(c.record("color", "red", { region: "FR" }), (e) => /region/.test(e.message), "region not served");
  await rejects(c.record("color", "red", { region: "DEU" }), (e) => /alpha-2/.test(e.message), "malformed region");
  await rejects(c.record("color", "red", { day: "2026-02-30" }), (e) => /YYYY-MM-DD/.test(e.message), "malformed day");
  assertEqual(c.pendingReports(), 0, "nothing queued");
}

export async function theCatalogIsFetchedWithTheKey() {
  const { fetch, calls } = fakeFetch([() => 200]);
  const served = async (url, init) => {
    const response = await fetch(url, init);
    if (init.method === "GET") return { ...response, text: async () => JSON.stringify(CATALOG) };
    return response;
  };
  const c = new sdk.TelemetryClient("http://telemetry.test", "key-2", { storage: new Storage(), fetch: served, sleep: async () => {} });
  assert(await c.record("sets", "c", { region: "US" }), "recorded");
  await c.flush();
  assertEqual(calls.map((call) => [call.method, call.url]), [["GET", "http://telemetry.test/api/v1/metrics"], ["POST", "http://telemetry.test/api/v1/reports"]], "requests");
  const payload = calls[1].body.reports[0].payload;
  // k = 6, ε = 1: ω = round(6 / (e + 1)) = 2 distinct indices, ascending
  assert(Array.isArray(payload) && payload.length === 2 && 0 <= payload[0] && payload[0] < payload[1] && payload[1] < 6, "an SS payload");
}

/** Rejection, not modulo: a draw at or above the range is thrown away (fake words in order). */
export async function integersAreDrawnByRejection() {
  const words = (list) => ({ uint32: () => list.shift() });
  // [0, 3) uses 2 bits: top bits 11 (= 3) are rejected, 10 (= 2) accepted.
  assertEqual(sdk.randomBelow(3, words([0xffffffff, 0x80000000, 0])), 2, "3 rejected, then 2");
  // [0, 2^32 - 1): 0xffffffff is rejected.
  assertEqual(sdk.randomBelow(2 ** 32 - 1, words([0xffffffff, 7])), 7, "all ones rejected");
  // 53 bits: 21 high bits of one word, then 32 of the next.
  assertEqual(sdk.randomBelow(2 ** 53, words([0xffffffff, 0xffffffff])), 2 ** 53 - 1, "53 bits");
  // Bernoulli(p): U < T with T = round(p 2^53): U = T - 1 succeeds, U = T fails.
  const t = sdk.bernoulliThreshold(1 / 3);
  const u = (n) => words([Math.floor(n / 2 ** 32) << 11 >>> 0, n % 2 ** 32]);
  assert(sdk.bernoulli(1 / 3, u(t - 1)) && !sdk.bernoulli(1 / 3, u(t)), "threshold");
  assert(!sdk.bernoulli(0, u(0)) && sdk.bernoulli(1, u(2 ** 53 - 1)), "0 and 1 are exact");
}

export const CHECKS = [
  batchesHoldAtMost100ReportsWithFreshIds, retriesKeepTheBatchId, unsentBatchesSurviveInStorage,
  authErrorsKeepTheBatchOtherErrorsDropIt, dailyCapIsTheLesserOfTheClientsAndTheMetricsBound, memoizedReportsRepeatTheMemo,
  ceilingsAndRaisesAreRefusedBeforeSpending, whatTheServerWouldRejectIsRefused, theCatalogIsFetchedWithTheKey,
  integersAreDrawnByRejection,
];

// --- cross-check with privacy/ldp --------------------------------------------------------------

/**
 * What the SDK computes for Python to compare: `cases.params` [[protocol, k, ε, report ε]], `cases.hashes`
 * [[seed, v, g]], `cases.thresholds` [p], and `cases.reports` [[protocol, k, ε, n]]: n randomized reports of
 * values i mod k and n null reports, with the values the SDK says each supports.
 */
export function crossCheck(cases) {
  const params = cases.params.map(([protocol, k, epsilon, perReport]) => {
    const o = sdk.makeOracle(protocol, k, epsilon);
    const g = sdk.guarantees(protocol, k, epsilon, perReport);
    const composed = sdk.composedProbabilities(protocol, k, epsilon, perReport);
    return { p: o.p, q: o.q, g: o.g ?? null, omega: o.omega ?? null, keep: g.keep, per_report: g.perReport,
             per_change: Number.isFinite(g.perChange) ? g.perChange : null, composed_p: composed.p, composed_q: composed.q };
  });
  const hashes = cases.hashes.map(([seed, v, g]) => sdk.olhHash(seed, v, g));
  const thresholds = cases.thresholds.map((p) => sdk.bernoulliThreshold(p));
  const reports = cases.reports.map(([protocol, k, epsilon, n]) => {
    const o = sdk.makeOracle(protocol, k, epsilon);
    const made = [];
    for (let i = 0; i < n; i++) made.push(o.randomize(i % k), o.nullReport());
    return made.map((wire) => ({ wire, supports: o.supports(wire) }));
  });
  return { params, hashes, thresholds, reports };
}
