-- wrk script: spread requests over many distinct signed links, then print a JSON summary.
-- Usage: wrk -t1 -c64 -d10s --latency -H 'Host: ...' -s bench/paths.lua URL -- PATHS_FILE
-- PATHS_FILE holds one request path per line (/t/<token>); requests walk it in order,
-- starting at a random line, so consecutive requests never repeat a link.
-- An optional second argument PACE_MS makes each connection wait after a response before
-- its next request: a fixed offered load instead of saturation. The wait is random
-- (exponential, mean PACE_MS): with one fixed pause the connections fall into step and
-- requests arrive in waves of all of them at once, which measures the wave, not the server.
local paths, n, i = {}, 0, 0

function init(args)
  for line in io.lines(args[1]) do
    n = n + 1
    paths[n] = line
  end
  math.randomseed(os.time())
  i = math.random(n)
  local pace = tonumber(args[2] or "0")
  if pace > 0 then
    delay = function() return math.floor(-pace * math.log(1 - math.random()) + 0.5) end
  end
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
