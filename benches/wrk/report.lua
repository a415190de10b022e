-- wrk script for GET latency runs (/stats, /metrics): leaves the request as wrk builds it and,
-- when the run ends, prints one machine-readable line with exact percentiles in microseconds
-- (wrk's own --latency table rounds to two decimals of ms/us). scripts/bench.sh parses it.
--
--   wrk -t1 -c4 -d10s --latency -s benches/wrk/report.lua http://127.0.0.1:18200/stats

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f "
      .. "status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.status, e.connect, e.read, e.write, e.timeout))
end
