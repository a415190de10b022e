-- wrk script for the sustained read load of scripts/bench-memory.sh: cycles through /stats,
-- /metrics, the first page of the list, a workspace's first page, and one scan by id (a random
-- one of test_000000000001 .. test_<BENCH_SCANS in hex>, the ids scripts/bench-lib.sh writes;
-- with BENCH_SCANS=0 /health takes that slot). Prints the same BENCH_RESULT line as report.lua.
--
--   BENCH_SCANS=100000 wrk -t1 -c4 -d10s --latency -s benches/wrk/read-mix.lua http://127.0.0.1:18200

dofile("benches/wrk/report.lua")

local scans = tonumber(os.getenv("BENCH_SCANS") or "") or 0
local i = 0

function init(args)
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)") or "0", 16))
end

function request()
  i = i + 1
  local k = i % 5
  local path
  if k == 0 then
    path = "/stats"
  elseif k == 1 then
    path = "/metrics"
  elseif k == 2 then
    path = "/v1/security-scans?limit=50"
  elseif k == 3 then
    path = string.format("/v1/security-scans?workspace_id=ws-%03d&limit=50", math.random(0, 99))
  elseif scans > 0 then
    path = string.format("/v1/security-scans/test_%012x", math.random(1, scans))
  else
    path = "/health"
  end
  return wrk.format("GET", path)
end
