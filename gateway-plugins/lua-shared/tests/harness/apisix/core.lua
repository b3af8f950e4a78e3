-- TEST-ONLY. The subset of APISIX's `apisix.core` the plugin calls, with APISIX's signatures:
-- schema.check, request.header/set_header/get_body, response.set_header, log, json.
local cjson = require("cjson.safe")
local json_schema = require("astrocyte_harness.json_schema")

local core = { schema = {}, request = {}, response = {}, log = {}, json = {} }

core.schema.check = json_schema.check

function core.request.header(_, name)
  local value = ngx.req.get_headers()[name]
  if type(value) == "table" then
    return value[1]
  end
  return value
end

function core.request.set_header(_, name, value)
  if value == nil then
    ngx.req.clear_header(name)
  else
    ngx.req.set_header(name, value)
  end
end

-- APISIX returns nil and an error when the body is larger than max_size.
function core.request.get_body(max_size)
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    return nil, "request body not in memory"
  end
  if max_size and #body > max_size then
    return nil, "request size " .. #body .. " is greater than the maximum size " .. max_size
  end
  return body
end

function core.response.set_header(name, value)
  ngx.header[name] = value
end

local function logger(level)
  return function(...)
    ngx.log(level, ...)
  end
end
core.log.debug = logger(ngx.DEBUG)
core.log.info = logger(ngx.INFO)
core.log.notice = logger(ngx.NOTICE)
core.log.warn = logger(ngx.WARN)
core.log.error = logger(ngx.ERR)

core.json.decode = cjson.decode
core.json.encode = cjson.encode

return core
