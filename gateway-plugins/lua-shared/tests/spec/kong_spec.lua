local cjson = require("cjson.safe")
local helpers = require("helpers")
local kong_schema = require("astrocyte_harness.kong_schema")

local BODY = cjson.encode({ model = "m", messages = { { role = "user", content = "tea?" } } })

-- A Kong PDK double recording what the handler asks of it.
local function fake_kong(request_headers, consumer)
  local k = { cleared = {}, response_headers = {}, plugin_ctx = {}, logs = {} }
  k.request = {
    get_header = function(name)
      return request_headers[name]
    end,
    get_headers = function()
      return request_headers
    end,
    get_raw_body = function()
      return BODY
    end,
  }
  k.service = {
    request = {
      set_raw_body = function(body)
        k.new_body = body
      end,
      clear_header = function(name)
        k.cleared[#k.cleared + 1] = name
      end,
    },
  }
  k.response = {
    set_header = function(name, value)
      k.response_headers[name] = value
    end,
    get_header = function(name)
      return k.upstream_headers and k.upstream_headers[name]
    end,
    get_status = function()
      return 200
    end,
    exit = function(status, body, headers)
      k.exited = { status = status, body = body, headers = headers }
    end,
  }
  k.client = {
    get_consumer = function()
      return consumer
    end,
  }
  k.router = {
    get_route = function()
      return { name = "chat" }
    end,
  }
  k.ctx = { plugin = k.plugin_ctx }
  k.log = setmetatable({}, {
    __index = function()
      return function(...)
        k.logs[#k.logs + 1] = table.concat({ ... })
      end
    end,
  })
  return k
end

local schema, handler, fake_ngx

local function load(request_headers, consumer)
  _G.kong = fake_kong(request_headers or {}, consumer)
  fake_ngx = helpers.fake_ngx()
  _G.ngx = fake_ngx
  local modules = {
    "astrocyte.memory",
    "kong.plugins.astrocyte-memory.handler",
    "kong.plugins.astrocyte-memory.schema",
    "kong.db.schema.typedefs",
  }
  for _, name in ipairs(modules) do
    package.loaded[name] = nil
  end
  schema = require("kong.plugins.astrocyte-memory.schema")
  handler = require("kong.plugins.astrocyte-memory.handler")
end

local function config(overrides)
  local c = { astrocyte_url = "http://astrocyte:8080", api_key = "svc" }
  for k, v in pairs(overrides or {}) do
    c[k] = v
  end
  return assert(kong_schema.validate_config(schema, c))
end

describe("kong schema", function()
  before_each(function()
    load()
  end)

  it("fills the documented defaults", function()
    local c = config()
    assert.equal("user:{consumer}", c.bank_template)
    assert.equal(250, c.timeout_ms)
    assert.is_true(c.fail_open)
    assert.is_true(c.retain)
    assert.same({}, c.bank_header_allowlist)
  end)

  it("marks the service key as a referenceable, encrypted secret", function()
    local api_key
    for _, field in ipairs(schema.fields[3].config.fields) do
      api_key = api_key or field.api_key
    end
    assert.is_true(api_key.referenceable)
    assert.is_true(api_key.encrypted)
  end)

  it("refuses bad config", function()
    assert.is_nil(kong_schema.validate_config(schema, { api_key = "svc" }))
    assert.is_nil(kong_schema.validate_config(schema, { astrocyte_url = "astrocyte", api_key = "svc" }))
    local _, errors = kong_schema.validate_config(schema, { astrocyte_url = "http://a", api_key = "k", timeout_ms = 5 })
    assert.truthy(errors.timeout_ms)
    _, errors = kong_schema.validate_config(schema, { astrocyte_url = "http://a", api_key = "k", min_score = 2 })
    assert.truthy(errors.min_score)
    _, errors = kong_schema.validate_config(schema, { astrocyte_url = "http://a", api_key = "k", typo = 1 })
    assert.truthy(errors.typo)
  end)

  it("runs after the auth plugins and before ai-proxy", function()
    assert.is_true(handler.PRIORITY > 770 and handler.PRIORITY < 950)
    assert.is_string(handler.VERSION)
  end)
end)

describe("kong handler", function()
  it("strips the client's X-Astrocyte-* headers and injects on a hit", function()
    local headers = { ["x-astrocyte-principal"] = "user:bob", ["x-astrocyte-bank"] = "user:bob", accept = "*/*" }
    load(headers, { username = "alice" })
    local calls = helpers.fake_http(function()
      return helpers.ok({ hits = { { text = "green tea", score = 1 } } })
    end)
    handler:access(config())
    table.sort(kong.cleared)
    assert.same({ "x-astrocyte-bank", "x-astrocyte-principal" }, kong.cleared)
    assert.equal("user:alice", calls[1].payload.bank_id)
    assert.equal("system", cjson.decode(kong.new_body).messages[1].role)
    kong.upstream_headers = { ["Content-Type"] = "application/json" }
    handler:header_filter(config())
    assert.equal("hit", kong.response_headers["X-Astrocyte-Memory"])
  end)

  it("retains from the log phase through a timer, never inline", function()
    load({}, { username = "alice" })
    local calls = helpers.fake_http(function(call)
      return helpers.ok(call.uri:find("recall") and { hits = {} } or { stored = true })
    end)
    local c = config()
    handler:access(c)
    kong.upstream_headers = { ["Content-Type"] = "application/json" }
    handler:header_filter(c)
    fake_ngx.arg[1] = '{"choices":[{"message":{"content":"hi"}}]}'
    handler:body_filter(c)
    handler:log(c)
    assert.equal(1, #calls)
    assert.equal(1, #fake_ngx.timers)
    assert.equal(0, fake_ngx.timers[1].delay)
    helpers.run_timers(fake_ngx)
    assert.equal(2, #calls)
    assert.equal("kong:req-1", calls[2].payload.idempotency_key)
    assert.equal("chat", calls[2].payload.metadata.route)
  end)

  it("fails open by default and closed when told", function()
    load({}, { username = "alice" })
    helpers.fake_http(function()
      return nil, "connection refused"
    end)
    handler:access(config())
    assert.is_nil(kong.exited)
    assert.is_nil(kong.new_body)
    handler:access(config({ fail_open = false }))
    assert.equal(503, kong.exited.status)
  end)

  it("does not read a body whose Content-Length is over the cap", function()
    load({ ["Content-Length"] = "5000" }, { username = "alice" })
    kong.request.get_raw_body = function()
      error("must not read")
    end
    handler:access(config({ max_body_bytes = 1024 }))
    assert.equal("skipped", kong.plugin_ctx.state.status)
  end)
end)
