-- wrk script for bench/soak.py: POST to several routes, paced to a target rate.
-- post_bodies.lua does the counting and the JSON summary ($BENCH_OUT); this script replaces
-- what is sent and when. $BENCH_BODIES: one request a line, "PATH<TAB>JSON body", cycled in
-- order (the file's mix is the load's mix). $BENCH_RATE: requests per second for this wrk
-- thread (0 or unset: no pacing). Pacing is one schedule per thread, shared by its
-- connections: each request takes the next slot (1/rate apart) and delay() waits for it; a
-- schedule that fell behind by more than a second (every connection busy) restarts from now
-- instead of bursting to catch up.
local here = string.match(debug.getinfo(1, "S").source, "^@(.*/)") or "./"
dofile(here .. "post_bodies.lua")

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
  return tonumber(now_ts.tv_sec) * 1000 + tonumber(now_ts.tv_nsec) / 1e6
end

local mixed = {}
local position = 1
local interval_ms = 0
local next_slot = nil

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    local path, body = string.match(line, "^([^\t]+)\t(.+)$")
    if path then
      mixed[#mixed + 1] = wrk.format("POST", path, headers, body)
    end
  end
  position = math.random(#mixed)
  local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
  if rate > 0 then
    interval_ms = 1000 / rate
  end
end

function request()
  local r = mixed[position]
  position = position % #mixed + 1
  return r
end

function delay()
  if interval_ms <= 0 then
    return 0
  end
  local now = now_ms()
  if next_slot == nil or next_slot < now - 1000 then
    next_slot = now
  end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  return wait > 0 and math.floor(wait + 0.5) or 0
end
