-- GET /api/queue/tokens/{token} (the status poll / heartbeat) for random waiting users.
local pairs_ = {}
function init(args)
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    local s, t = line:match("(%S+) (%S+)")
    pairs_[#pairs_ + 1] = { s, t }
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
function request()
  local p = pairs_[math.random(#pairs_)]
  return wrk.format("GET", "/api/queue/tokens/" .. p[2], { ["Authorization"] = "Bearer " .. p[1] })
end
function done(summary, latency, requests)
  io.write(string.format("non-2xx/3xx: %d\n", summary.errors.status))
end
