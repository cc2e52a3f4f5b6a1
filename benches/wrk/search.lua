-- wrk script: POST a search with a random vector to the REST gateway.
--   wrk -t2 -c32 -d30s -s benches/wrk/search.lua http://127.0.0.1:8090 -- memories 1024 16
-- Arguments: namespace (default memories), dimension (1024), tenants (1).
-- Every request picks a tenant and a fresh random vector, so the result
-- cache does not answer; see search_repeated.lua for cacheable traffic.

local namespace, dim, tenants = "memories", 1024, 1

function init(args)
  namespace = args[1] or namespace
  dim = tonumber(args[2]) or dim
  tenants = tonumber(args[3]) or tenants
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
  wrk.method = "POST"
  wrk.path = "/v1/namespaces/" .. namespace .. "/memories/search"
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
  local tenant = "bench-" .. math.random(0, tenants - 1)
  local body = '{"tenant":"' .. tenant .. '","limit":10,"withPayload":true,"vector":' .. vector() .. '}'
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
