-- TEST-ONLY. Runs the unmodified APISIX plugin in plain nginx: configs checked by its
-- check_schema, an APISIX-shaped ctx per request (ctx.var, ctx.consumer_name, ctx.route_id)
-- and one call per phase.
local harness_config = require("astrocyte_harness.config")

local M = {}
local consumers, routes = {}, {}

function M.init(path)
  M.plugin = require("apisix.plugins.astrocyte-memory")
  local data = harness_config.load(path)
  consumers = data.consumers
  for name, conf in pairs(data.routes) do
    if conf then
      local ok, err = M.plugin.check_schema(conf)
      assert(ok, "route " .. name .. ": " .. tostring(err))
      routes[name] = conf
    end
  end
end

local function ctx()
  return ngx.ctx.apisix_ctx
end

local function run(phase)
  local c = ctx()
  local conf = c and routes[c.route_id]
  if conf then
    return M.plugin[phase](conf, c)
  end
end

function M.access(route)
  local var = setmetatable({}, {
    __index = function(_, key)
      return ngx.var[key]
    end,
  })
  ngx.ctx.apisix_ctx = { var = var, route_id = route, consumer_name = harness_config.authenticate(consumers) }
  local status, body = run("access")
  if status then
    ngx.status = status
    ngx.say(require("cjson.safe").encode(body))
    return ngx.exit(status)
  end
end

function M.header_filter()
  run("header_filter")
end

function M.body_filter()
  run("body_filter")
end

function M.log()
  run("log")
end

return M
