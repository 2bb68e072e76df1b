-- POST /api/payments: each request pays a different held reservation (wrk stops issuing
-- once every reservation has been paid once; later requests would be 409 ALREADY_PAID).
local threads_n = 0
function setup(thread)
  thread:set("tid", threads_n)
  threads_n = threads_n + 1
end
local rows, n, step = {}, 0, 0
function init(args)
  for line in io.lines(os.getenv("BENCH_PAYABLE")) do
    local s, q, r = line:match("(%S+) (%S+) (%S+)")
    rows[#rows + 1] = { s, q, r }
  end
  step = tonumber(os.getenv("BENCH_THREADS"))
  n = tid
end
function request()
  local row = rows[(n % #rows) + 1]
  n = n + step
  return wrk.format("POST", "/api/payments",
    { ["Authorization"] = "Bearer " .. row[1], ["X-Queue-Token"] = row[2], ["Content-Type"] = "application/json" },
    '{"reservation_id":' .. row[3] .. '}')
end
function done(summary, latency, requests)
  io.write(string.format("non-2xx/3xx: %d\n", summary.errors.status))
end
