-- TEST-ONLY. Reads the harness file the tests write (consumers by key, routes by name), and
-- authenticates like key-auth.
local cjson = require("cjson.safe")

local M = {}

--- A deep copy (schema defaults must not be shared between configs).
function M.copy(value)
  if type(value) ~= "table" then
    return value
  end
  local out = {}
  for k, v in pairs(value) do
    out[k] = M.copy(v)
  end
  return out
end

function M.load(path)
  local file = assert(io.open(path, "rb"))
  local data = assert(cjson.decode(file:read("*a")), "harness config is not JSON")
  file:close()
  return data
end

-- Authenticate like key-auth with hide_credentials: the consumer owning the `apikey` header.
function M.authenticate(consumers)
  local key = ngx.req.get_headers()["apikey"]
  ngx.req.clear_header("apikey")
  if type(key) ~= "string" then
    return nil
  end
  return consumers[key]
end

return M
