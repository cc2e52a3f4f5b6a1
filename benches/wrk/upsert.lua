-- wrk script: POST an upsert of one memory (a random vector, a small
-- payload, a fresh id) to the REST gateway.
--   wrk -t2 -c64 -d30s -s benches/wrk/upsert.lua http://127.0.0.1:8090 -- memories 1024 16
-- Arguments: namespace (default memories), dimension (1024), tenants (1).

local namespace, dim, tenants = "memories", 1024, 1
local counter, thread_tag = 0, ""

function init(args)
  namespace = args[1] or namespace
  dim = tonumber(args[2]) or dim
  tenants = tonumber(args[3]) or tenants
  thread_tag = tostring({}):sub(8)
  math.randomseed(os.time() + (tonumber(thread_tag, 16) or 0))
  wrk.method = "POST"
  wrk.path = "/v1/namespaces/" .. namespace .. "/memories"
  wrk.headers["Content-Type"] = "application/json"
end

local function vector()
  local parts = {}
  for i = 1, dim do
    parts[i] = string.format("%.4f", math.random() * 2 - 1)
  end
  return "[" .. table.concat(parts, ",") .. "]"
end

function request()
  counter = counter + 1
  local tenant = "bench-" .. math.random(0, tenants - 1)
  local id = "wrk-" .. thread_tag .. "-" .. counter
  local body = '{"tenant":"' .. tenant .. '","memories":[{"id":"' .. id ..
    '","vector":' .. vector() .. ',"payload":{"source":"wrk","n":' .. counter .. '}}]}'
  return wrk.format(nil, nil, nil, body)
end

local errors = 0
function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
    if errors <= 3 then
      io.stderr:write("HTTP " .. status .. ": " .. body .. "\n")
    end
  end
end
