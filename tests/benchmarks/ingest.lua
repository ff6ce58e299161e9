-- wrk script for tests/benchmarks/bench_ingest.py.
--
--   wrk -s ingest.lua URL -- MODE PATH API_KEY METRIC DAY RUN_ID OUT_FILE K
--
-- Every request is a batch of 100 k-RR reports of one metric and one day, with a
-- fresh batch_id and a client_id of its own ("c-" .. batch_id: one batch per client,
-- so each client sends exactly its daily caps, 100 reports in all and m = 100 for the
-- metric, and the limits drop nothing). RUN_ID starts every batch_id, so a run's client
-- ids all start "c-" .. RUN_ID. The body is built once per thread; a request only
-- splices in the two ids, so wrk stays light on the CPU. The same body goes to every
-- PATH. MODE "ingest" reads each answer's counts and keeps the acknowledged batch_ids;
-- any other MODE ("bare", "floor") only counts statuses. done() writes one JSON object
-- to OUT_FILE.

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("tid", #threads)
end

function init(args)
  mode, path, key, metric, day, run_id, out_file = args[1], args[2], args[3], args[4], args[5], args[6], args[7]
  local k = tonumber(args[8])
  local regions = { "US", "DE", "FR", "JP", "BR", "" }
  local items = {}
  for i = 1, 100 do
    local region = regions[(i + tid) % #regions + 1]
    local item = '{"metric":"' .. metric .. '","value":"v' .. ((i * 7 + tid) % k) .. '","day":"' .. day .. '"'
    if region ~= "" then item = item .. ',"region":"' .. region .. '"' end
    items[i] = item .. "}"
  end
  -- the ids have a fixed length, so the request is a constant head and body with two ids spliced in
  local reports = "[" .. table.concat(items, ",") .. "]}"
  local body_length = #'{"batch_id":"' + 36 + #'","client_id":"c-' + 36 + #'","reports":' + #reports
  local host = wrk.headers["Host"] or (wrk.host .. ":" .. wrk.port)
  head = "POST " .. path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nContent-Type: application/json\r\n" ..
    "Authorization: Api-Key " .. key .. "\r\nContent-Length: " .. body_length .. '\r\n\r\n{"batch_id":"'
  middle = '","client_id":"c-'
  tail = '","reports":' .. reports
  id_prefix = run_id .. string.format("-%04x-4000-8000-", tid)
  counter, ok, other, accepted, rejected, n_acked, acked = 0, 0, 0, 0, 0, 0, {}
end

function request()
  counter = counter + 1
  local batch_id = id_prefix .. string.format("%012x", counter)
  return head .. batch_id .. middle .. batch_id .. tail
end

function response(status, headers, body)
  if status ~= 200 then
    other = other + 1
    return
  end
  ok = ok + 1
  if mode == "ingest" then
    -- the answer starts {"batch_id":"<36>","accepted":N,"rejected":M,...
    local a, r = string.match(body, '^"accepted":(%d+),"rejected":(%d+)', 52)
    if a == nil then
      other = other + 1
      return
    end
    accepted = accepted + tonumber(a)
    rejected = rejected + tonumber(r)
    n_acked = n_acked + 1
    acked[n_acked] = string.sub(body, 14, 49)
  end
end

function done(summary, latency, requests)
  local totals = { ok = 0, other = 0, accepted = 0, rejected = 0, issued = 0 }
  local ids = {}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      local value = thread:get(name == "issued" and "counter" or name)
      totals[name] = totals[name] + (value or 0)
    end
    for _, id in ipairs(thread:get("acked") or {}) do ids[#ids + 1] = '"' .. id .. '"' end
  end
  local e = summary.errors
  local file = io.open(threads[1]:get("out_file"), "w")
  file:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,"status_200":%d,"status_other":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},' ..
    '"issued":%d,"accepted":%d,"rejected":%d,' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f},"acked_batch_ids":[%s]}',
    summary.duration, summary.requests, summary.bytes, totals.ok, totals.other,
    e.connect, e.read, e.write, e.timeout,
    totals.issued, totals.accepted, totals.rejected,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    table.concat(ids, ",")))
  file:close()
end
