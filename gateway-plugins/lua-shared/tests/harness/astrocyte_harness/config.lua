-- TEST-ONLY. Reads the harness file the tests write: consumers by key and routes by name.
local cjson = require("cjson.safe")

local M = {}

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
