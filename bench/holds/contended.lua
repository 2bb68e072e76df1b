-- POST /api/reservations: every client wants seat 1 of the same one-seat schedule.
local buyers, sched = {}, nil
function init(args)
  for line in io.lines(os.getenv("BENCH_BUYERS")) do
    local s, q = line:match("(%S+) (%S+)")
    buyers[#buyers + 1] = { s, q }
  end
  sched = io.lines(os.getenv("BENCH_CONTENDED"))()
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end
function request()
  local b = buyers[math.random(#buyers)]
  return wrk.format("POST", "/api/reservations",
    { ["Authorization"] = "Bearer " .. b[1], ["X-Queue-Token"] = b[2], ["Content-Type"] = "application/json" },
    '{"schedule_id":' .. sched .. ',"seat_nos":[1]}')
end
function done(summary, latency, requests)
  io.write(string.format("non-2xx/3xx (409 expected for all but one): %d\n", summary.errors.status))
end
