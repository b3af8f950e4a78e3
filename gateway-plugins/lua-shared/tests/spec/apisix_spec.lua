local cjson = require("cjson.safe")
local helpers = require("helpers")

local BODY = cjson.encode({ model = "m", stream = true, messages = { { role = "user", content = "tea?" } } })

local plugin, fake_ngx, set_headers

local function load(request_headers)
  fake_ngx = helpers.fake_ngx()
  fake_ngx.req.headers = request_headers or {}
  _G.ngx = fake_ngx
  set_headers = {}
  package.loaded["apisix.core"] = nil
  package.loaded["astrocyte.memory"] = nil
  package.loaded["apisix.plugins.astrocyte-memory"] = nil
  local core = require("apisix.core")
  core.request.get_body = function()
    return BODY
  end
  core.request.set_header = function(_, name, value)
    set_headers[name] = value == nil and "<cleared>" or value
  end
  plugin = require("apisix.plugins.astrocyte-memory")
end

local function conf(overrides)
  local c = { astrocyte_url = "http://astrocyte:8080", api_key = "svc" }
  for k, v in pairs(overrides or {}) do
    c[k] = v
  end
  assert(plugin.check_schema(c))
  return c
end

local function ctx(consumer)
  return { var = { request_id = "req-9" }, consumer_name = consumer, route_id = "r1" }
end

describe("apisix plugin", function()
  it("declares version, priority between ai-proxy and auth, schema and encrypted fields", function()
    load()
    assert.is_number(plugin.version)
    assert.is_true(plugin.priority > 1040 and plugin.priority < 2500)
    assert.same({ "api_key" }, plugin.encrypt_fields)
    assert.equal("astrocyte-memory", plugin.name)
  end)

  it("checks the schema and fills defaults", function()
    load()
    local c = conf()
    assert.equal(250, c.timeout_ms)
    assert.is_false((plugin.check_schema({ api_key = "k" })))
    assert.is_false((plugin.check_schema({ astrocyte_url = "ftp://x", api_key = "k" })))
    assert.is_false((plugin.check_schema({ astrocyte_url = "http://x", api_key = "k", max_memories = 0 })))
  end)

  it("recalls for the verified consumer, strips client headers, injects", function()
    load({ ["x-astrocyte-bank"] = "user:bob" })
    local calls = helpers.fake_http(function()
      return helpers.ok({ hits = { { text = "green tea", score = 1 } } })
    end)
    local c, request = conf(), ctx("alice")
    assert.is_nil(plugin.access(c, request))
    assert.equal("user:alice", calls[1].payload.bank_id)
    assert.equal("<cleared>", set_headers["x-astrocyte-bank"])
    assert.equal("system", cjson.decode(fake_ngx.req.body).messages[1].role)
    plugin.header_filter(c, request)
    assert.equal("hit", fake_ngx.header["X-Astrocyte-Memory"])
  end)

  it("fails closed with 503 when fail_open is off", function()
    load()
    helpers.fake_http(function()
      return nil, "timeout"
    end)
    local status = plugin.access(conf({ fail_open = false }), ctx("alice"))
    assert.equal(503, status)
  end)

  it("retains ai-proxy's llm_response_text when it is there", function()
    load()
    local calls = helpers.fake_http(function(call)
      return helpers.ok(call.uri:find("recall") and { hits = {} } or { stored = true })
    end)
    local c, request = conf(), ctx("alice")
    plugin.access(c, request)
    plugin.header_filter(c, request)
    request.var.llm_response_text = "answer from ai-proxy"
    plugin.log(c, request)
    helpers.run_timers(fake_ngx)
    assert.equal("user: tea?\nassistant: answer from ai-proxy", calls[2].payload.content)
    assert.equal("apisix:req-9", calls[2].payload.idempotency_key)
  end)

  it("accumulates a stream from the body filter and retains it once finished", function()
    load()
    local calls = helpers.fake_http(function(call)
      return helpers.ok(call.uri:find("recall") and { hits = {} } or { stored = true })
    end)
    local c, request = conf(), ctx("alice")
    plugin.access(c, request)
    fake_ngx.header["Content-Type"] = "text/event-stream"
    plugin.header_filter(c, request)
    for _, chunk in ipairs({ 'data: {"choices":[{"delta":{"content":"A"}}]}\n\n', "data: [DONE]\n\n" }) do
      fake_ngx.arg[1] = chunk
      plugin.body_filter(c, request)
      assert.equal(chunk, fake_ngx.arg[1]) -- passed on unchanged
    end
    plugin.log(c, request)
    helpers.run_timers(fake_ngx)
    assert.equal("user: tea?\nassistant: A", calls[2].payload.content)
  end)
end)
