-- TEST-ONLY. Runs the unmodified Kong plugin in plain nginx: a global `kong` holding the PDK
-- subset the handler calls, configs validated by the plugin's own schema, and one call per phase.
local cjson = require("cjson.safe")
local harness_config = require("astrocyte_harness.config")
local kong_schema = require("astrocyte_harness.kong_schema")

local M = {}
local consumers, routes = {}, {}

local function first(value)
  if type(value) == "table" then
    return value[1]
  end
  return value
end

local pdk = {
  request = {
    get_header = function(name)
      return first(ngx.req.get_headers()[name])
    end,
    get_headers = function()
      return ngx.req.get_headers()
    end,
    get_raw_body = function()
      ngx.req.read_body()
      return ngx.req.get_body_data()
    end,
  },
  service = {
    request = {
      set_raw_body = function(body)
        ngx.req.set_body_data(body)
      end,
      clear_header = function(name)
        ngx.req.clear_header(name)
      end,
    },
  },
  response = {
    get_header = function(name)
      return first(ngx.header[name])
    end,
    set_header = function(name, value)
      ngx.header[name] = value
    end,
    get_status = function()
      return ngx.status
    end,
    exit = function(status, body, headers)
      ngx.status = status
      for name, value in pairs(headers or {}) do
        ngx.header[name] = value
      end
      ngx.header["Content-Type"] = "application/json; charset=utf-8"
      ngx.print(cjson.encode(body))
      return ngx.exit(status)
    end,
  },
  client = {
    get_consumer = function()
      return ngx.ctx.kong_consumer
    end,
  },
  router = {
    get_route = function()
      return { id = ngx.ctx.kong_route, name = ngx.ctx.kong_route }
    end,
  },
  ctx = setmetatable({}, {
    __index = function(_, key)
      if key == "plugin" then
        ngx.ctx.kong_plugin = ngx.ctx.kong_plugin or {}
        return ngx.ctx.kong_plugin
      end
    end,
  }),
  log = {},
}
for name, level in pairs({ debug = ngx.DEBUG, info = ngx.INFO, notice = ngx.NOTICE, warn = ngx.WARN, err = ngx.ERR }) do
  pdk.log[name] = function(...)
    ngx.log(level, ...)
  end
end

function M.init(path)
  _G.kong = pdk
  local schema = require("kong.plugins.astrocyte-memory.schema")
  local data = harness_config.load(path)
  for key, username in pairs(data.consumers) do
    consumers[key] = { id = "id-" .. username, username = username }
  end
  for name, conf in pairs(data.routes) do
    if conf then
      local valid, errors = kong_schema.validate_config(schema, conf)
      assert(valid, "route " .. name .. ": " .. cjson.encode(errors))
      routes[name] = valid
    end
  end
  M.handler = require("kong.plugins.astrocyte-memory.handler")
end

local function conf()
  return routes[ngx.ctx.kong_route]
end

function M.access(route)
  ngx.ctx.kong_route = route
  ngx.ctx.kong_consumer = harness_config.authenticate(consumers)
  if conf() then
    M.handler:access(conf())
  end
end

function M.header_filter()
  if conf() then
    M.handler:header_filter(conf())
  end
end

function M.body_filter()
  if conf() then
    M.handler:body_filter(conf())
  end
end

function M.log()
  if conf() then
    M.handler:log(conf())
  end
end

return M
