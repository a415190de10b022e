-- wrk script that POSTs one valid scan submission per request to /v1/security-scans and counts
-- the answers: 202 (accepted) versus anything else. With CERTUS_ASSURANCE_MAX_WORKERS=0 the
-- service stores the scan QUEUED and never runs it, so this measures admission only.
-- When the run ends it prints one machine-readable line that scripts/bench.sh parses.
--
-- BENCH_SUBMIT_LIMIT (environment, optional): each wrk thread stops once it has counted that
-- many 202 answers (requests already in flight on its other connections still complete), so a
-- round can stop near a target count; `stopped=1` in the result line then says the run ended
-- early, and wrk's duration for it is not the time the submissions took.
-- BENCH_SUBMIT_BODY (environment, optional): the JSON body to POST instead of the default one
-- (scripts/bench-submit.sh points it at a local repository so that workers really scan).
--
--   wrk -t1 -c8 -d5s -s benches/wrk/submit.lua http://127.0.0.1:18200/v1/security-scans

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local body = os.getenv("BENCH_SUBMIT_BODY")
if body == nil or body == "" then
  body = '{"workspace_id":"bench","component_id":"c","assessment_id":"a",'
    .. '"git_url":"https://example.com/org/repo.git","branch":"main","profile":"light"}'
end
wrk.body = body

local threads = {}
local limit = tonumber(os.getenv("BENCH_SUBMIT_LIMIT") or "") or 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  accepted = 0
  other = 0
  last_other_status = 0
  stopped = 0
end

function response(status, headers, body)
  if status == 202 then
    accepted = accepted + 1
    if limit > 0 and accepted >= limit and stopped == 0 then
      stopped = 1
      wrk.thread:stop()
    end
  else
    other = other + 1
    last_other_status = status
  end
end

function done(summary, latency, requests)
  local a, o, last, st = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("accepted")
    o = o + t:get("other")
    st = math.max(st, t:get("stopped"))
    local s = t:get("last_other_status")
    if s ~= 0 then last = s end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_SUBMIT accepted=%d other=%d last_other_status=%d stopped=%d requests=%d duration_us=%d "
      .. "p50_us=%d p99_us=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    a, o, last, st, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.timeout))
end
