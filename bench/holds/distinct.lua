-- POST /api/reservations: every request a different seat (1 seat per hold), random buyer.
local threads_n = 0
function setup(thread)
  thread:set("tid", threads_n)
  threads_n = threads_n + 1
end
local buyers, schedules, n, per, step = {}, {}, 0, 0, 0
function init(args)
  for line in io.lines(os.getenv("BENCH_BUYERS")) do
    local s, q = line:match("(%S+) (%S+)")
    buyers[#buyers + 1] = { s, q }
  end
  for line in io.lines(os.getenv("BENCH_SCHEDULES")) do schedules[#schedules + 1] = line end
  per = tonumber(os.getenv("BENCH_SEATS"))
  step = tonumber(os.getenv("BENCH_THREADS"))
  n = tid
  math.randomseed(os.time() + tid * 7919)
end
function request()
  local idx = n
  n = n + step
  local sched = schedules[math.floor(idx / per) % #schedules + 1]
  local seat = idx % per + 1
  local b = buyers[math.random(#buyers)]
  return wrk.format("POST", "/api/reservations",
    { ["Authorization"] = "Bearer " .. b[1], ["X-Queue-Token"] = b[2], ["Content-Type"] = "application/json" },
    '{"schedule_id":' .. sched .. ',"seat_nos":[' .. seat .. ']}')
end
function done(summary, latency, requests)
  io.write(string.format("non-2xx/3xx: %d\n", summary.errors.status))
end
