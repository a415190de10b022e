-- wrk script that spreads the submissions of benches/wrk/submit.lua over several replicas: wrk
-- thread i sends all its requests to replica (i mod N) of BENCH_TARGETS ("host:port,host:port").
-- Run it with as many threads as replicas (or a multiple). The counting and the BENCH_SUBMIT
-- result line come from submit.lua. Paths are relative to the repository root.
--
--   BENCH_TARGETS=127.0.0.1:18400,127.0.0.1:18401,127.0.0.1:18402 \
--     wrk -t3 -c24 -d10s -s benches/wrk/submit-replicas.lua http://127.0.0.1:18400/v1/security-scans

dofile("benches/wrk/submit.lua")

local targets = {}
for target in string.gmatch(os.getenv("BENCH_TARGETS") or "", "[^,]+") do
  table.insert(targets, target)
end

local count_setup = setup
local next_target = 0

function setup(thread)
  if #targets > 0 then
    local host, port = targets[next_target % #targets + 1]:match("^(.+):(%d+)$")
    thread.addr = wrk.lookup(host, port)[1]
    next_target = next_target + 1
  end
  count_setup(thread)
end
