// privtel.js: the browser SDK of the privacy-first telemetry service. An ES module, no dependencies.
//
// It is the Python SDK (telemetry/sdk) for web pages: the same frequency oracles (k-RR, OUE, OLH, SS,
// privacy/ldp), the same wire format, the same longitudinal scheme (a memoized permanent report plus an
// instantaneous step, privacy/ldp/longitudinal.py), the same per-metric daily caps and client ceilings,
// and the same delivery rules (batches of at most 100, retried under the same batch_id, spooled until
// acknowledged). State and spool live in localStorage (or any object with getItem/setItem/removeItem).
//
// Randomness: every draw comes from crypto.getRandomValues. Integers in [0, n) are drawn by rejection
// on the smallest number of whole bits covering n (no modulo bias). Bernoulli(p) compares a uniform
// 53-bit integer U against T = round_half_even(p * 2^53): P[U < T] = T / 2^53, which is p rounded to
// the nearest multiple of 2^-53 (p * 2^53 is exact in binary floating point, so the only rounding is
// that one), exactly as privacy/csprng.py's bernoulli does.
//
// Usage (docs/browser-sdk.md):
//   import { TelemetryClient } from "/static/frontend/sdk/privtel.js";
//   const client = new TelemetryClient(location.origin, INGEST_KEY);
//   await client.record("app_theme", "theme_03", { region: "DE" });
//   await client.flush();

export const MAX_BATCH_SIZE = 100;
export const DEFAULT_MAX_LOCAL_EPSILON = 4.0;
export const PROTOCOLS = Object.freeze(["krr", "oue", "olh", "ss"]);
export const SEED_RANGE = 2 ** 32;
const TWO_53 = 2 ** 53;
const AUTH_STATUSES = new Set([401, 403]);
const CATALOG_REFRESH_MS = 60_000;

// --- errors ------------------------------------------------------------------------------------

/** A request, a batch or the local state could not be handled (the Python SDK's TelemetryError). */
export class TelemetryError extends Error {
  constructor(code, message, { status = null, batchId = null, retained = false } = {}) {
    super(`${code}: ${message}`);
    this.name = "TelemetryError";
    this.code = code;
    this.status = status;
    this.batchId = batchId;
    this.retained = retained;
  }
}

/** A metric definition this client refuses before spending anything (codes as the Python SDK). */
export class PrivacyRefused extends TelemetryError {
  constructor(code, message) {
    super(code, message);
    this.name = "PrivacyRefused";
  }
}

/** Some batches of a flush failed; `responses` holds the delivered ones' answers, `errors` the rest. */
export class FlushError extends TelemetryError {
  constructor(responses, errors) {
    const kept = errors.filter((e) => e.retained).length;
    super("flush_failed", `${errors.length} batch(es) failed (${kept} kept for a later flush); first: ${errors[0].message}`);
    this.name = "FlushError";
    this.responses = responses;
    this.errors = errors;
  }
}

// --- randomness (crypto.getRandomValues only) ---------------------------------------------------

/** Uniform 32-bit words from crypto.getRandomValues, buffered (at most 65536 bytes per call). */
export class CryptoRandom {
  constructor(crypto = globalThis.crypto) {
    if (!crypto || typeof crypto.getRandomValues !== "function") {
      throw new TelemetryError("no_csprng", "crypto.getRandomValues is not available");
    }
    this._crypto = crypto;
    this._buffer = new Uint32Array(4096);
    this._next = this._buffer.length;
  }

  uint32() {
    if (this._next === this._buffer.length) {
      this._crypto.getRandomValues(this._buffer);
      this._next = 0;
    }
    return this._buffer[this._next++];
  }
}

let defaultRandom = null;
function systemRandom() {
  defaultRandom ??= new CryptoRandom();
  return defaultRandom;
}

function bitLength(n) {
  let bits = 0;
  while (n >= 1) {
    n = Math.floor(n / 2);
    bits += 1;
  }
  return bits;
}

/** `bits` (0..53) uniform bits as an exact integer Number. */
function randomBits(bits, rng) {
  if (bits <= 32) return bits === 0 ? 0 : rng.uint32() >>> (32 - bits);
  const high = rng.uint32() >>> (64 - bits); // bits - 32 (<= 21) high bits
  return high * 2 ** 32 + rng.uint32();
}

/** A uniform integer in [0, upper), upper an integer in [1, 2^53]: rejection, never modulo. */
export function randomBelow(upper, rng = systemRandom()) {
  if (!Number.isInteger(upper) || upper < 1 || upper > TWO_53) throw new RangeError("upper must be an integer in [1, 2^53]");
  if (upper === 1) return 0;
  const bits = bitLength(upper - 1); // every try succeeds with probability > 1/2
  for (;;) {
    const candidate = randomBits(bits, rng);
    if (candidate < upper) return candidate;
  }
}

/** Round half to even, as Python's round(). */
export function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** The threshold T of Bernoulli(p): round_half_even(p * 2^53), an exact integer (privacy/csprng.py). */
export function bernoulliThreshold(p) {
  if (!(p >= 0 && p <= 1)) throw new RangeError("probability must be in [0, 1]");
  return roundHalfEven(p * TWO_53);
}

/** True with probability exactly bernoulliThreshold(p) / 2^53: a uniform 53-bit integer below T. */
export function bernoulli(p, rng = systemRandom()) {
  return randomBits(53, rng) < bernoulliThreshold(p);
}

/** A 128-bit secret as 32 hex digits (the client id, as the Python SDK's secrets.token_hex(16)). */
function randomHex(bytes, rng) {
  let out = "";
  for (let i = 0; i < bytes / 4; i++) out += rng.uint32().toString(16).padStart(8, "0");
  return out;
}

/** A random (version 4) UUID from the CSPRNG, for batch ids. */
export function uuid4(rng = systemRandom()) {
  const hex = randomHex(16, rng).split("");
  hex[12] = "4";
  hex[16] = "89ab"[parseInt(hex[16], 16) & 3];
  const s = hex.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

// --- frequency oracles (privacy/ldp) -----------------------------------------------------------

const MASK_64 = (1n << 64n) - 1n;
const INCREMENT = 0x9e3779b97f4a7c15n;
const MIX_1 = 0xbf58476d1ce4e5b9n;
const MIX_2 = 0x94d049bb133111ebn;

/** OLH's hash H(seed, v) = splitmix64(seed * 2^32 + v) mod g (privacy/ldp/olh.py; Steele, Lea, Flood 2014). */
export function olhHash(seed, value, g) {
  let z = ((BigInt(seed) << 32n) + BigInt(value) + INCREMENT) & MASK_64;
  z = ((z ^ (z >> 30n)) * MIX_1) & MASK_64;
  z = ((z ^ (z >> 27n)) * MIX_2) & MASK_64;
  z ^= z >> 31n;
  return Number(z % BigInt(g));
}

/** Keep `value` w.p. keep, else a uniform other value of [0, domain) (generalized randomized response). */
function generalizedRR(value, domain, keep, rng) {
  if (bernoulli(keep, rng)) return value;
  const other = randomBelow(domain - 1, rng);
  return other >= value ? other + 1 : other;
}

/** `size` distinct uniform values of [0, k) other than `value`: partial Fisher-Yates over the k - 1 others. */
function sampleOthers(value, k, size, rng) {
  const pool = Array.from({ length: k - 1 }, (_, i) => i);
  for (let i = 0; i < size; i++) {
    const j = i + randomBelow(k - 1 - i, rng);
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, size).map((v) => (v >= value ? v + 1 : v));
}

const ascending = (a, b) => a - b;

/**
 * An ε-LDP frequency oracle over {0..k-1}: p, q (Wang, Blocki, Li, Jha 2017, Sec. 3), the client's
 * randomizer, the null report of the longitudinal scheme, and which values a report supports.
 * Reports are in wire form: k-RR an index, OUE a "0"/"1" string, OLH [seed, y], SS a sorted index list.
 */
export function makeOracle(protocol, k, epsilon) {
  if (!Number.isInteger(k) || k < 2 || k > 2 ** 16) throw new RangeError("k must be an integer in [2, 65536]");
  if (!(epsilon > 0 && epsilon <= 20)) throw new RangeError("epsilon must be in (0, 20]");
  const e = Math.exp(epsilon);
  switch (protocol) {
    case "krr": {
      // Wang et al. 2017, Sec. 4.1 (DE): p = e^ε/(e^ε+k-1), q = 1/(e^ε+k-1).
      const p = e / (e + k - 1), q = 1 / (e + k - 1);
      return {
        name: "krr", k, epsilon, p, q, nullSupport: 1 / k,
        randomize: (v, rng) => generalizedRR(v, k, p, rng),
        nullReport: (rng) => randomBelow(k, rng),
        supports: (r) => [r],
      };
    }
    case "oue": {
      // Wang et al. 2017, Sec. 4.3 (OUE): p = 1/2, q = 1/(e^ε+1).
      const p = 0.5, q = 1 / (e + 1);
      const bits = (v, rng) => Array.from({ length: k }, (_, i) => (bernoulli(i === v ? p : q, rng) ? "1" : "0")).join("");
      return {
        name: "oue", k, epsilon, p, q, nullSupport: q,
        randomize: (v, rng) => bits(v, rng),
        nullReport: (rng) => bits(-1, rng), // every bit Bernoulli(q)
        supports: (r) => [...r].flatMap((bit, i) => (bit === "1" ? [i] : [])),
      };
    }
    case "olh": {
      // Wang et al. 2017, Sec. 4.4 (OLH): g = round(e^ε)+1, p = e^ε/(e^ε+g-1), q = 1/g.
      const g = roundHalfEven(e) + 1;
      const p = e / (e + g - 1), q = 1 / g;
      return {
        name: "olh", k, epsilon, p, q, g, nullSupport: 1 / g,
        randomize: (v, rng) => {
          const seed = randomBelow(SEED_RANGE, rng);
          return [seed, generalizedRR(olhHash(seed, v, g), g, p, rng)];
        },
        nullReport: (rng) => [randomBelow(SEED_RANGE, rng), randomBelow(g, rng)],
        supports: ([seed, y]) => Array.from({ length: k }, (_, u) => u).filter((u) => olhHash(seed, u, g) === y),
      };
    }
    case "ss": {
      // Ye and Barg 2018: ω = max(1, round(k/(e^ε+1))), p = ω e^ε/(ω e^ε + k - ω); q = (p(ω-1) + (1-p)ω)/(k-1).
      const omega = Math.max(1, roundHalfEven(k / (e + 1)));
      const p = (omega * e) / (omega * e + k - omega);
      const q = (p * (omega - 1) + (1 - p) * omega) / (k - 1);
      return {
        name: "ss", k, epsilon, p, q, omega, nullSupport: omega / k,
        randomize: (v, rng) => {
          const subset = sampleOthers(v, k, omega, rng);
          if (bernoulli(p, rng)) subset[omega - 1] = v; // the first ω - 1 others stay uniform
          return subset.sort(ascending);
        },
        nullReport: (rng) => sampleOthers(k, k + 1, omega, rng).sort(ascending), // a uniform ω-subset of [0, k)
        supports: (r) => r,
      };
    }
    default:
      throw new RangeError(`unknown protocol ${JSON.stringify(protocol)}; expected one of ${PROTOCOLS.join(", ")}`);
  }
}

// --- the longitudinal scheme (privacy/ldp/longitudinal.py) --------------------------------------

function logAdd(a, b) {
  const high = Math.max(a, b), low = Math.min(a, b);
  return high + Math.log1p(Math.exp(low - high));
}

/** log(λ e^x + (1 - λ)). */
function logMixture(x, keep) {
  return keep >= 1 ? x : logAdd(Math.log(keep) + x, Math.log1p(-keep));
}

/** (log ρ_in, log ρ_out): log P_x(r)/U(r) for a report supporting x and not x', and the same under x'. */
function logDensityRatios(o) {
  const { p, k } = o;
  switch (o.name) {
    case "krr": return [Math.log(p * k), Math.log(o.q * k)];
    case "oue": return [Math.log(p / o.q), Math.log((1 - p) / (1 - o.q))];
    case "olh": return [Math.log(p * o.g), Math.log(((1 - p) / (o.g - 1)) * o.g)];
    default: return [Math.log((p * k) / o.omega), Math.log(((1 - p) * k) / (k - o.omega))];
  }
}

/** log U_min, the least probability of one null report. */
function logMinNullProbability(o) {
  switch (o.name) {
    case "krr": return -Math.log(o.k);
    case "oue": return o.k * Math.log(o.q);
    case "olh": return -Math.log(SEED_RANGE) - Math.log(o.g);
    default: { // -log C(k, ω)
      let logChoose = 0;
      for (let i = 1; i <= o.omega; i++) logChoose += Math.log((o.k - o.omega + i) / i);
      return -logChoose;
    }
  }
}

/** The exact ε of one report of the composed channel λ P_x + (1 - λ) U. */
function reportEpsilon(o, keep) {
  if (keep <= 0) return 0;
  const [logIn, logOut] = logDensityRatios(o);
  return logMixture(logIn, keep) - logMixture(logOut, keep);
}

/** λ whose one-report channel has exactly `perReport` ε: solve λρ_in + 1 - λ = e^ε1 (λρ_out + 1 - λ). */
function keepProbability(o, perReport) {
  if (!(perReport > 0 && perReport <= o.epsilon * (1 + 1e-12))) throw new RangeError("report_epsilon must be in (0, epsilon]");
  if (perReport >= o.epsilon) return 1;
  const [rhoIn, rhoOut] = logDensityRatios(o).map(Math.exp);
  const ratio = Math.exp(perReport);
  return Math.min(1, (ratio - 1) / (rhoIn - 1 - ratio * (rhoOut - 1)));
}

/** Histories that differ in one report's true value: log(1 + λ / ((1-λ) U_min)); Infinity at λ = 1. */
function changeEpsilon(o, keep) {
  if (keep >= 1) return Infinity;
  if (keep <= 0) return 0;
  return logAdd(0, Math.log(keep) - (Math.log1p(-keep) + logMinNullProbability(o)));
}

/** A metric's keep probability λ and its per-value, per-report and per-change ε (computed here, never read). */
export function guarantees(protocol, k, epsilon, perReportEpsilon) {
  const o = makeOracle(protocol, k, epsilon);
  const keep = keepProbability(o, perReportEpsilon);
  return { keep, perValue: o.epsilon, perReport: reportEpsilon(o, keep), perChange: changeEpsilon(o, keep) };
}

/**
 * The composed channel as the server sees one report: p' = λp + (1-λ)u, q' = λq + (1-λ)u (Wang et al.
 * 2017 Thm. 2 with the composed channel, as MemoizedOracle).
 */
export function composedProbabilities(protocol, k, epsilon, perReportEpsilon) {
  const o = makeOracle(protocol, k, epsilon);
  const keep = keepProbability(o, perReportEpsilon);
  return { p: keep * o.p + (1 - keep) * o.nullSupport, q: keep * o.q + (1 - keep) * o.nullSupport, keep };
}

// --- the catalog -------------------------------------------------------------------------------

function parseMetric(data) {
  const metric = {
    name: String(data.name),
    version: Number(data.version),
    domain: [...data.domain].map(String),
    epsilon: Number(data.epsilon),
    protocol: String(data.protocol),
    contributionBound: Number(data.contribution_bound ?? data.contributionBound),
    reportEpsilon: Number(data.report_epsilon ?? data.reportEpsilon ?? data.epsilon),
  };
  if (!PROTOCOLS.includes(metric.protocol)) throw new TypeError(`metric ${metric.name}: unknown protocol ${metric.protocol}`);
  if (metric.domain.length < 2 || new Set(metric.domain).size !== metric.domain.length) {
    throw new TypeError(`metric ${metric.name}: domain needs >= 2 distinct labels`);
  }
  if (!(metric.epsilon > 0) || !(metric.contributionBound >= 1)) {
    throw new TypeError(`metric ${metric.name}: epsilon and contribution_bound must be positive`);
  }
  if (!(metric.reportEpsilon > 0 && metric.reportEpsilon <= metric.epsilon)) {
    throw new TypeError(`metric ${metric.name}: report_epsilon must be in (0, epsilon]`);
  }
  metric.guarantees = guarantees(metric.protocol, metric.domain.length, metric.epsilon, metric.reportEpsilon);
  return Object.freeze(metric);
}

/** A catalog from GET /api/v1/metrics's body (or a list of metric objects). */
export function parseCatalog(body) {
  const list = Array.isArray(body) ? body : body.metrics;
  const regions = !Array.isArray(body) && body.regions != null ? new Set(body.regions.map(String)) : null;
  const maxAge = !Array.isArray(body) && body.report_max_age_days != null ? Number(body.report_max_age_days) : null;
  return { metrics: new Map(list.map((m) => [m.name, parseMetric(m)])), regions, reportMaxAgeDays: maxAge };
}

// --- state and spool in localStorage ----------------------------------------------------------

class MemoryStorage {
  constructor() { this._items = new Map(); }
  getItem(key) { return this._items.has(key) ? this._items.get(key) : null; }
  setItem(key, value) { this._items.set(key, String(value)); }
  removeItem(key) { this._items.delete(key); }
}

function defaultStorage() {
  try {
    return globalThis.localStorage ?? new MemoryStorage();
  } catch {
    return new MemoryStorage(); // storage disabled: state lasts as long as the page
  }
}

function readJson(storage, key, fallback) {
  const text = storage.getItem(key);
  if (text === null) return fallback;
  try {
    return JSON.parse(text);
  } catch (error) {
    // Starting over would forget the caps and the memos, and so spend privacy a second time.
    throw new TelemetryError("state_corrupt", `${key} is not valid JSON: ${error.message}`);
  }
}

/** An exclusive section: across tabs with the Web Locks API when present, else within this page. */
function makeLock(name) {
  let tail = Promise.resolve();
  const locks = globalThis.navigator?.locks;
  return (fn) => {
    const run = locks ? () => locks.request(name, fn) : fn;
    const result = tail.then(run, run);
    tail = result.catch(() => {});
    return result;
  };
}

// --- the client ---------------------------------------------------------------------------------

const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;

function todayUtc() {
  return new Date().toISOString().slice(0, 10);
}

function dayString(day) {
  if (day == null) return todayUtc();
  if (day instanceof Date) return day.toISOString().slice(0, 10);
  const text = String(day);
  const parsed = new Date(`${text}T00:00:00Z`);
  if (!DAY_RE.test(text) || Number.isNaN(parsed.getTime()) || parsed.toISOString().slice(0, 10) !== text) {
    throw new RangeError(`day must be YYYY-MM-DD, got ${JSON.stringify(day)}`);
  }
  return text;
}

function addDays(day, days) {
  return new Date(Date.parse(`${day}T00:00:00Z`) + days * 86_400_000).toISOString().slice(0, 10);
}

function regionCode(region) {
  if (region == null) return null;
  if (typeof region !== "string" || !/^[A-Za-z]{2}$/.test(region)) {
    throw new RangeError(`region must be an ISO 3166 alpha-2 code, got ${JSON.stringify(region)}`);
  }
  return region.toUpperCase();
}

const jsonEpsilon = (x) => (Number.isFinite(x) ? x : null);
const fromJsonEpsilon = (x) => (x === null ? Infinity : x);

/**
 * Records local-DP reports in a web page and delivers them to the telemetry server.
 *
 * Options (defaults as the Python TelemetryClient): clientId, memoize (true), maxReportsPerMetricPerDay (1),
 * maxLocalEpsilon (4), maxChangeEpsilon (null), batchSize (100), maxRetries (5), backoffBaseMs (500),
 * backoffMaxMs (30000), catalog (a fixed catalog instead of GET /api/v1/metrics), storage (localStorage),
 * storageKey ("privtel": the prefix of the state and spool keys), fetch, sleep (ms => Promise), random.
 */
export class TelemetryClient {
  constructor(baseUrl, apiKey, options = {}) {
    const {
      clientId = null, memoize = true, maxReportsPerMetricPerDay = 1, maxLocalEpsilon = DEFAULT_MAX_LOCAL_EPSILON,
      maxChangeEpsilon = null, batchSize = MAX_BATCH_SIZE, maxRetries = 5, backoffBaseMs = 500,
      backoffMaxMs = 30_000, catalog = null, storage = defaultStorage(), storageKey = "privtel",
      fetch = globalThis.fetch?.bind(globalThis), sleep = (ms) => new Promise((done) => setTimeout(done, ms)),
      random = systemRandom(),
    } = options;
    if (!(Number.isInteger(batchSize) && batchSize >= 1 && batchSize <= MAX_BATCH_SIZE)) {
      throw new RangeError(`batchSize must be an integer in [1, ${MAX_BATCH_SIZE}]`);
    }
    if (!(maxReportsPerMetricPerDay >= 1) || !(maxRetries >= 0)) {
      throw new RangeError("maxReportsPerMetricPerDay must be >= 1 and maxRetries >= 0");
    }
    if (!(maxLocalEpsilon > 0) || (maxChangeEpsilon !== null && !(maxChangeEpsilon > 0))) {
      throw new RangeError("maxLocalEpsilon and maxChangeEpsilon must be > 0");
    }
    this._baseUrl = String(baseUrl).replace(/\/+$/, "");
    this._apiKey = apiKey;
    this._memoize = memoize;
    this._maxPerDay = maxReportsPerMetricPerDay;
    this._maxLocalEpsilon = maxLocalEpsilon;
    this._maxChangeEpsilon = maxChangeEpsilon;
    this._batchSize = batchSize;
    this._maxRetries = maxRetries;
    this._backoffBaseMs = backoffBaseMs;
    this._backoffMaxMs = backoffMaxMs;
    this._storage = storage;
    this._stateKey = `${storageKey}:state`;
    this._spoolKey = `${storageKey}:spool`;
    this._fetch = fetch;
    this._sleep = sleep;
    this._random = random;
    this._catalog = catalog === null ? null : parseCatalog(catalog);
    this._fixedCatalog = catalog !== null;
    this._catalogFetchedAt = -Infinity;
    this._queue = [];
    this._stateLock = makeLock(`${storageKey}:state`);
    this._sendLock = makeLock(`${storageKey}:send`);
    const state = this._readState();
    if (clientId) state.client_id = clientId;
    state.client_id ||= randomHex(16, random); // a 128-bit per-install secret
    this._writeState(state);
    this.clientId = state.client_id;
  }

  // -- recording ----------------------------------------------------------------------------------

  /**
   * Randomize `value` for `metric` and queue the randomized report. Resolves true when queued, false
   * (spending nothing) when the metric's daily cap is reached for that day. Rejects, before spending
   * anything: RangeError for an unknown metric, a value outside the domain, a malformed or refused day
   * or region; PrivacyRefused (epsilon_above_ceiling, change_epsilon_above_ceiling, epsilon_raised).
   */
  async record(metric, value, { day = null, region = null } = {}) {
    const spec = await this.metric(metric);
    const index = spec.domain.indexOf(value);
    if (index < 0) throw new RangeError(`${JSON.stringify(value)} is not in the domain of metric ${metric}`);
    const dayStr = dayString(day);
    const code = regionCode(region);
    this._checkIngestAccepts(dayStr, code);
    this._checkCeilings(spec);
    return this._stateLock(() => {
      const state = this._readState();
      this._checkNotRaised(spec, state);
      const entry = state.days?.[dayStr]?.[spec.name] ?? {};
      if ((entry.reports ?? 0) >= Math.min(this._maxPerDay, spec.contributionBound)) return false;
      const wire = this._randomize(spec, index, state);
      accept(state, spec.name, spec.epsilon, spec.reportEpsilon);
      countReport(state, spec.name, dayStr, `${spec.version}:${index}`, this._dayFigures(spec, entry, `${spec.version}:${index}`));
      this._writeState(state);
      this._queue.push(reportBody(spec, wire, dayStr, code));
      return true;
    });
  }

  /** Accept, for `metric`, definitions up to `epsilon` (and `reportEpsilon`): the consent a raised ε needs. */
  async acceptEpsilon(metric, epsilon, reportEpsilon = epsilon) {
    if (!(reportEpsilon > 0 && reportEpsilon <= epsilon && epsilon <= this._maxLocalEpsilon)) {
      throw new RangeError(`need 0 < reportEpsilon <= epsilon <= maxLocalEpsilon (${this._maxLocalEpsilon})`);
    }
    await this._stateLock(() => {
      const state = this._readState();
      accept(state, metric, epsilon, reportEpsilon);
      this._writeState(state);
    });
  }

  /** What this client's reports of `metric` on that UTC day cost: {reports, distinctValues, perReport, perValue, perChange, day}. */
  privacySpent(metric, day = null) {
    const dayStr = dayString(day);
    const entry = this._readState().days?.[dayStr]?.[metric] ?? {};
    const f = entry.figures ?? { per_report: 0, per_value: 0, per_change: 0, day: 0 };
    return {
      metric, day: dayStr, reports: entry.reports ?? 0, distinctValues: Object.keys(entry.values ?? {}).length,
      memoized: this._memoize, perReport: f.per_report, perValue: f.per_value, perChange: f.per_change, dayEpsilon: f.day,
    };
  }

  /** Randomized reports queued and not yet flushed to the spool. */
  pendingReports() {
    return this._queue.length;
  }

  /** Batches in the spool (written, not yet acknowledged), oldest first. */
  spooledBatches() {
    return readJson(this._storage, this._spoolKey, []);
  }

  _checkIngestAccepts(day, region) {
    const today = todayUtc();
    if (day > today) throw new RangeError(`day ${day} is after today (${today}, UTC); the server rejects it`);
    const maxAge = this._catalog?.reportMaxAgeDays;
    if (maxAge != null && day < addDays(today, -maxAge)) {
      throw new RangeError(`day ${day} is more than ${maxAge} days old; the server rejects it`);
    }
    const regions = this._catalog?.regions;
    if (region !== null && regions && !regions.has(region)) throw new RangeError(`region ${region} is not one the server accepts`);
  }

  _checkCeilings(spec) {
    if (spec.epsilon > this._maxLocalEpsilon) {
      throw new PrivacyRefused("epsilon_above_ceiling",
        `metric ${spec.name} v${spec.version} has local epsilon ${spec.epsilon}, above this client's maxLocalEpsilon ${this._maxLocalEpsilon}; nothing was recorded`);
    }
    const g = spec.guarantees;
    const perChange = this._memoize ? g.perChange : g.perReport;
    if (this._maxChangeEpsilon !== null && perChange > this._maxChangeEpsilon) {
      throw new PrivacyRefused("change_epsilon_above_ceiling",
        `metric ${spec.name} v${spec.version} has per-change epsilon ${perChange}, above this client's maxChangeEpsilon ${this._maxChangeEpsilon}; nothing was recorded`);
    }
  }

  _checkNotRaised(spec, state) {
    const accepted = state.accepted?.[spec.name];
    if (accepted && (spec.epsilon > accepted.epsilon || spec.reportEpsilon > accepted.report_epsilon)) {
      throw new PrivacyRefused("epsilon_raised",
        `metric ${spec.name} v${spec.version} raised its local epsilon to ${spec.epsilon} (per report ${spec.reportEpsilon}) from the ${accepted.epsilon} (${accepted.report_epsilon}) this client accepted; nothing was recorded. Call acceptEpsilon() to accept it.`);
    }
  }

  /** One report's wire value: the (memoized) permanent report, then the instantaneous step. */
  _randomize(spec, index, state) {
    const oracle = makeOracle(spec.protocol, spec.domain.length, spec.epsilon);
    const memos = state.memo?.[spec.name]?.[String(spec.version)];
    let memo = this._memoize ? memos?.[String(index)] : undefined;
    if (memo === undefined) {
      memo = oracle.randomize(index, this._random);
      if (this._memoize) {
        state.memo ??= {};
        state.memo[spec.name] ??= {};
        state.memo[spec.name][String(spec.version)] ??= {};
        state.memo[spec.name][String(spec.version)][String(index)] = memo;
      }
    }
    const { keep } = spec.guarantees;
    if (keep >= 1 || bernoulli(keep, this._random)) return memo;
    return oracle.nullReport(this._random);
  }

  /** The day's guarantees once this report is counted (the worst over the day's versions). */
  _dayFigures(spec, entry, valueKey) {
    const g = spec.guarantees;
    const reports = (entry.reports ?? 0) + 1;
    let figures;
    if (this._memoize) {
      figures = { per_report: g.perReport, per_value: g.perValue, per_change: g.perChange, day: reports * g.perChange };
    } else {
      const repeats = (entry.values?.[valueKey] ?? 0) + 1;
      figures = { per_report: g.perReport, per_value: repeats * g.perReport, per_change: g.perReport, day: reports * g.perReport };
    }
    const previous = entry.figures ?? {};
    return Object.fromEntries(Object.entries(figures).map(
      ([name, x]) => [name, jsonEpsilon(Math.max(x, fromJsonEpsilon(previous[name] ?? 0)))]));
  }

  _readState() {
    return readJson(this._storage, this._stateKey, {});
  }

  _writeState(state) {
    this._storage.setItem(this._stateKey, JSON.stringify(state));
  }

  // -- catalog ------------------------------------------------------------------------------------

  /** The current definition of `name`; refetches the catalog (at most once a minute) if unknown. */
  async metric(name) {
    const stale = Date.now() - this._catalogFetchedAt >= CATALOG_REFRESH_MS;
    if (this._catalog === null || (!this._catalog.metrics.has(name) && !this._fixedCatalog && stale)) {
      await this.refreshCatalog();
    }
    const spec = this._catalog.metrics.get(name);
    if (!spec) throw new RangeError(`unknown metric ${JSON.stringify(name)}`);
    return spec;
  }

  /** Fetch the current metric versions from the server. */
  async refreshCatalog() {
    const response = await this._exchange("GET", "/api/v1/metrics");
    if (response.status !== 200) throw errorFrom(response, "GET /api/v1/metrics");
    try {
      this._catalog = parseCatalog(response.data);
    } catch (error) {
      throw new TelemetryError("bad_response", `unusable metric catalog: ${error.message}`);
    }
    this._catalogFetchedAt = Date.now();
    return this._catalog;
  }

  // -- delivery -----------------------------------------------------------------------------------

  /** Spool the queue as batches of at most batchSize (fresh batch ids) and send everything spooled. */
  async flush() {
    const reports = this._queue;
    this._queue = [];
    if (reports.length) {
      await this._sendLock(() => {
        const spool = this.spooledBatches();
        for (let start = 0; start < reports.length; start += this._batchSize) {
          spool.push({ batch_id: uuid4(this._random), client_id: this.clientId, reports: reports.slice(start, start + this._batchSize) });
        }
        this._storage.setItem(this._spoolKey, JSON.stringify(spool));
      });
    }
    return this.resendSpooled();
  }

  /**
   * Send the spooled batches oldest first, including those an earlier page left. 2xx: removed.
   * Network error, 5xx, 429: retried with backoff under the same batch_id; kept when retries run out.
   * 401/403: kept, sending stops. Another 4xx: dropped. Rejects with FlushError if any batch failed.
   */
  resendSpooled() {
    return this._sendLock(async () => {
      const responses = [], errors = [];
      for (const body of this.spooledBatches()) {
        try {
          responses.push(await this._deliver(body));
        } catch (error) {
          if (!(error instanceof TelemetryError)) throw error;
          errors.push(error);
          if (error.retained) break;
        }
      }
      if (errors.length) throw new FlushError(responses, errors);
      return responses;
    });
  }

  async _deliver(body) {
    let response;
    try {
      response = await this._exchange("POST", "/api/v1/reports", body);
    } catch (error) {
      error.batchId = body.batch_id;
      error.retained = true;
      throw error;
    }
    if (response.status >= 200 && response.status < 300) {
      this._unspool(body.batch_id);
      return response.data;
    }
    const error = errorFrom(response, `batch ${body.batch_id}`);
    error.batchId = body.batch_id;
    error.retained = AUTH_STATUSES.has(response.status);
    if (!error.retained) this._unspool(body.batch_id);
    throw error;
  }

  _unspool(batchId) {
    const spool = this.spooledBatches().filter((body) => body.batch_id !== batchId);
    this._storage.setItem(this._spoolKey, JSON.stringify(spool));
  }

  /** A request, retried on network errors, 5xx and 429 with capped exponential backoff and jitter. */
  async _exchange(method, path, body = undefined) {
    let last = "";
    for (let attempt = 0; attempt <= this._maxRetries; attempt++) {
      if (attempt) await this._sleep(this._backoffDelayMs(attempt - 1));
      let response;
      try {
        response = await this._request(method, path, body);
      } catch (error) {
        last = error.message;
        continue;
      }
      if (!(response.status >= 500 || response.status === 429)) return response;
      last = `HTTP ${response.status}`;
    }
    throw new TelemetryError("retries_exhausted", `${method} ${path}: ${this._maxRetries + 1} attempts failed; last: ${last}`);
  }

  async _request(method, path, body) {
    const init = {
      method,
      headers: { Authorization: `Api-Key ${this._apiKey}`, Accept: "application/json" },
      credentials: "omit", // the ingest key authenticates; no cookie of the page is sent
      cache: "no-store",
    };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const raw = await this._fetch(this._baseUrl + path, init);
    const text = await raw.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    return { status: raw.status, data, replayed: raw.headers?.get?.("Idempotent-Replayed") === "true" };
  }

  /** Exponential, capped at backoffMaxMs, with jitter in its upper half (from the CSPRNG). */
  _backoffDelayMs(retry) {
    const delay = Math.min(this._backoffMaxMs, this._backoffBaseMs * 2 ** retry);
    return delay * (0.5 + (0.5 * randomBits(53, this._random)) / TWO_53);
  }
}

function accept(state, metric, epsilon, reportEpsilon) {
  state.accepted ??= {};
  const previous = state.accepted[metric] ?? { epsilon: 0, report_epsilon: 0 };
  state.accepted[metric] = { epsilon: Math.max(previous.epsilon, epsilon), report_epsilon: Math.max(previous.report_epsilon, reportEpsilon) };
}

function countReport(state, metric, day, valueKey, figures) {
  state.days ??= {};
  state.days[day] ??= {};
  const entry = (state.days[day][metric] ??= { reports: 0 });
  entry.reports += 1;
  entry.values ??= {};
  entry.values[valueKey] = (entry.values[valueKey] ?? 0) + 1;
  entry.figures = figures;
}

function reportBody(spec, wire, day, region) {
  const report = { metric: spec.name, version: spec.version, day };
  if (spec.protocol === "krr") report.value = spec.domain[wire];
  else report.payload = wire;
  if (region !== null) report.region = region;
  return report;
}

function errorFrom(response, what) {
  const data = response.data && typeof response.data === "object" ? response.data : {};
  return new TelemetryError(String(data.code || `http_${response.status}`), String(data.message || `${what}: HTTP ${response.status}`),
    { status: response.status });
}
