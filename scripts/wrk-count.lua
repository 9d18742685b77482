-- wrk script of the mesh-under-load test (tests/e2e/mesh_load.rs) and scripts/bench-mesh:
--   wrk ... -s scripts/wrk-count.lua URL -- DELAY_MS [close|keep-alive]
-- paces each connection (DELAY_MS between requests), sends `Connection: close` when asked (a new
-- connection per request), counts statuses and bodies (the tasks answer with their task id) and
-- prints them with wrk's error counts when wrk ends (also on SIGINT).
threads = {}
statuses = {}
bodies = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  pause = tonumber(args[1]) or 0
  headers = {}
  if args[2] == "close" then headers["Connection"] = "close" end
end
function delay() return pause end
function request() return wrk.format("GET", "/", headers) end
function response(status, hdrs, body)
  statuses[status] = (statuses[status] or 0) + 1
  local id = string.gsub(body or "", "%s+$", "")
  bodies[id] = (bodies[id] or 0) + 1
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do io.write(string.format("status %s %d\n", k, v)) end
    for k, v in pairs(t:get("bodies")) do io.write(string.format("body %s %d\n", k, v)) end
  end
  local e = summary.errors
  io.write(string.format("requests %d\n", summary.requests))
  io.write(string.format("errors %d %d %d %d %d\n", e.connect, e.read, e.write, e.status, e.timeout))
end
