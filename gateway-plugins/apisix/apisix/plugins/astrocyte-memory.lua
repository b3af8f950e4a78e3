-- APISIX plugin: recall Astrocyte memories into chat completions (access phase) and retain the
-- conversation turn afterwards, off the client's path (log phase timer). The behaviour lives in
-- the shared `astrocyte.memory` module; this file maps it onto APISIX.
local core = require("apisix.core")
local memory = require("astrocyte.memory")

local ngx = ngx

local plugin_name = "astrocyte-memory"

local schema = {
  type = "object",
  properties = {
    astrocyte_url = { type = "string", pattern = [[^https?://]] },
    api_key = { type = "string", minLength = 1 },
    bank_template = { type = "string", minLength = 1, default = "user:{consumer}" },
    principal_template = { type = "string", minLength = 1, default = "user:{consumer}" },
    bank_header_allowlist = { type = "array", items = { type = "string" }, default = {} },
    max_memories = { type = "integer", minimum = 1, maximum = 50, default = 5 },
    max_injected_chars = { type = "integer", minimum = 200, maximum = 100000, default = 4000 },
    min_score = { type = "number", minimum = 0, maximum = 1, default = 0 },
    timeout_ms = { type = "integer", minimum = 10, maximum = 10000, default = 250 },
    fail_open = { type = "boolean", default = true },
    retain = { type = "boolean", default = true },
    retain_streams = { type = "boolean", default = true },
    retain_timeout_ms = { type = "integer", minimum = 100, maximum = 60000, default = 3000 },
    max_body_bytes = { type = "integer", minimum = 1024, maximum = 67108864, default = 1048576 },
    max_response_bytes = { type = "integer", minimum = 1024, maximum = 16777216, default = 262144 },
    ssl_verify = { type = "boolean", default = true },
    keepalive_timeout_ms = { type = "integer", minimum = 0, maximum = 3600000, default = 60000 },
    keepalive_pool_size = { type = "integer", minimum = 1, maximum = 1000, default = 32 },
  },
  required = { "astrocyte_url", "api_key" },
}

local _M = {
  version = 0.1,
  -- After the auth plugins (key-auth 2500, jwt-auth 2510, ...), before ai-proxy (1040).
  priority = 1050,
  name = plugin_name,
  schema = schema,
  encrypt_fields = { "api_key" },
}

function _M.check_schema(conf)
  return core.schema.check(schema, conf)
end

local function strip_client_headers(ctx)
  for name in pairs(ngx.req.get_headers()) do
    if name:lower():find("^x%-astrocyte%-") then
      core.request.set_header(ctx, name, nil)
    end
  end
end

function _M.access(conf, ctx)
  local bank_header = core.request.header(ctx, "X-Astrocyte-Bank")
  strip_client_headers(ctx)
  local size = tonumber(core.request.header(ctx, "Content-Length"))
  local body
  if not size or size <= conf.max_body_bytes then
    body = core.request.get_body(conf.max_body_bytes, ctx)
  end
  local state = memory.access(conf, {
    consumer = ctx.consumer_name,
    bank_header = bank_header,
    body = body,
    body_size = size,
  })
  ctx.astrocyte_memory = state
  if state.status == "error" then
    core.log.warn("astrocyte recall failed: ", state.reason)
    if not conf.fail_open then
      core.response.set_header(memory.HEADER, "error")
      return 503, { error_msg = "memory service unavailable" }
    end
  elseif state.status == "hit" then
    ngx.req.set_body_data(state.body)
  end
end

function _M.header_filter(conf, ctx)
  local state = ctx.astrocyte_memory
  if not state then
    return
  end
  core.response.set_header(memory.HEADER, state.status)
  if state.turn then
    local kind = memory.answer_kind(ngx.header["Content-Type"])
    if kind and not ngx.header["Content-Encoding"] then
      state.answer = memory.answer(kind, conf.max_response_bytes)
    end
  end
end

function _M.body_filter(_, ctx)
  local state = ctx.astrocyte_memory
  -- With ai-proxy, the answer arrives as ctx.var.llm_response_text; no need to read chunks.
  if state and state.answer then
    state.answer:feed(ngx.arg[1])
  end
end

function _M.log(conf, ctx)
  local state = ctx.astrocyte_memory
  if not (state and state.turn) then
    return
  end
  local turn, why = memory.finished_turn(conf, state.turn, {
    status = ngx.status,
    answer = state.answer,
    answer_text = ctx.var.llm_response_text,
    request_id = ctx.var.request_id,
    route = ctx.route_name or ctx.route_id,
    source = "apisix",
  })
  if not turn then
    core.log.notice("astrocyte not retained: ", why)
    return
  end
  local ok, err = memory.retain_later(conf, turn, core.log.warn)
  if not ok then
    core.log.warn("astrocyte retain not scheduled: ", err)
  end
end

return _M
