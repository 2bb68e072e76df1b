-- POST /api/queue/tokens as a random seeded user for a random concert (mostly new tokens).
local sessions = {}
function init(args)
  for line in io.lines(os.getenv("BENCH_SESSIONS")) do sessions[#sessions + 1] = line end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
function request()
  local s = sessions[math.random(#sessions)]
  local body = '{"concert_id":' .. math.random(1, 20) .. '}'
  return wrk.format("POST", "/api/queue/tokens",
    { ["Authorization"] = "Bearer " .. s, ["Content-Type"] = "application/json" }, body)
end
function done(summary, latency, requests)
  io.write(string.format("non-2xx/3xx: %d\n", summary.errors.status))
end
