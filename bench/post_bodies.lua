-- wrk script: POST one JSON body per line of $BENCH_BODIES (cycling), count responses by status
-- and error code, check every 503 carries Retry-After, and write a JSON summary to $BENCH_OUT.
local path = os.getenv("BENCH_PATH") or "/predict"
local requests = {}
local next_index = 1

counts = {}
codes = {}
missing_retry_after = 0

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", path, headers, line)
    end
  end
  -- Each connection starts at a different place in the list.
  next_index = math.random(#requests)
end

function request()
  local r = requests[next_index]
  next_index = next_index % #requests + 1
  return r
end

function response(status, headers, body)
  local key = tostring(status)
  counts[key] = (counts[key] or 0) + 1
  if status >= 400 then
    local code = string.match(body, '"code":%s*"([%w_]+)"') or "?"
    local name = key .. ":" .. code
    codes[name] = (codes[name] or 0) + 1
    if status == 503 and headers["retry-after"] == nil and headers["Retry-After"] == nil then
      missing_retry_after = missing_retry_after + 1
    end
  end
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

local function merge(into, from)
  for k, v in pairs(from or {}) do
    into[k] = (into[k] or 0) + v
  end
end

local function json_object(t)
  local parts = {}
  for k, v in pairs(t) do
    parts[#parts + 1] = string.format('"%s": %s', k, tostring(v))
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

function done(summary, latency, requests)
  local all_counts, all_codes, missing = {}, {}, 0
  for _, thread in ipairs(threads) do
    merge(all_counts, thread:get("counts"))
    merge(all_codes, thread:get("codes"))
    missing = missing + (thread:get("missing_retry_after") or 0)
  end
  local percentiles = {}
  for _, p in ipairs({ 50, 75, 90, 95, 99, 99.5, 99.9 }) do
    percentiles[#percentiles + 1] = string.format('"%s": %d', tostring(p), latency:percentile(p))
  end
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  out:write("{")
  out:write(string.format('"requests": %d, "duration_us": %d, "bytes": %d, ',
    summary.requests, summary.duration, summary.bytes))
  out:write(string.format('"socket_errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ',
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
  out:write(string.format('"non_2xx": %d, ', summary.errors.status))
  out:write(string.format('"latency_us": {"min": %d, "mean": %.1f, "max": %d, "stdev": %.1f, "percentiles": {%s}}, ',
    latency.min, latency.mean, latency.max, latency.stdev, table.concat(percentiles, ", ")))
  out:write('"status": ' .. json_object(all_counts) .. ', ')
  out:write('"error_codes": ' .. json_object(all_codes) .. ', ')
  out:write(string.format('"missing_retry_after": %d', missing))
  out:write("}\n")
  out:close()
end
