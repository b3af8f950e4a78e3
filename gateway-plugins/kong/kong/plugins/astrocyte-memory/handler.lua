-- Kong plugin: recall Astrocyte memories into chat completions (access phase) and retain the
-- conversation turn afterwards, off the client's path (log phase timer). The behaviour lives in
-- the shared `astrocyte.memory` module; this file maps it onto the Kong PDK.
local memory = require("astrocyte.memory")

local kong = kong
local ngx = ngx

local AstrocyteMemory = {
  -- After the auth plugins (key-auth 1250 ... acl 950) and rate limiting (910), before ai-proxy (770).
  PRIORITY = 800,
  VERSION = "0.1.0",
}

local function strip_client_headers()
  for name in pairs(kong.request.get_headers()) do
    if name:lower():find("^x%-astrocyte%-") then
      kong.service.request.clear_header(name)
    end
  end
end

local function consumer_name()
  local consumer = kong.client.get_consumer()
  if not consumer then
    return nil
  end
  return consumer.username or consumer.custom_id or consumer.id
end

function AstrocyteMemory:access(conf)
  local bank_header = kong.request.get_header("X-Astrocyte-Bank")
  strip_client_headers()
  local size = tonumber(kong.request.get_header("Content-Length"))
  local body
  if not size or size <= conf.max_body_bytes then
    body = kong.request.get_raw_body()
  end
  local state = memory.access(conf, {
    consumer = consumer_name(),
    bank_header = bank_header,
    body = body,
    body_size = size,
  })
  kong.ctx.plugin.state = state
  if state.status == "error" then
    kong.log.warn("astrocyte recall failed: ", state.reason)
    if not conf.fail_open then
      return kong.response.exit(503, { message = "memory service unavailable" }, {
        [memory.HEADER] = "error",
      })
    end
  elseif state.status == "hit" then
    kong.service.request.set_raw_body(state.body)
  elseif state.status == "skipped" then
    kong.log.debug("astrocyte skipped: ", state.reason)
  end
end

function AstrocyteMemory:header_filter(conf)
  local state = kong.ctx.plugin.state
  if not state then
    return
  end
  kong.response.set_header(memory.HEADER, state.status)
  if state.turn then
    local kind = memory.answer_kind(kong.response.get_header("Content-Type"))
    if kind and not kong.response.get_header("Content-Encoding") then
      state.answer = memory.answer(kind, conf.max_response_bytes)
    end
  end
end

function AstrocyteMemory:body_filter()
  local state = kong.ctx.plugin.state
  if state and state.answer then
    -- Read the chunk as it passes; it is neither buffered nor changed.
    state.answer:feed(ngx.arg[1])
  end
end

function AstrocyteMemory:log(conf)
  local state = kong.ctx.plugin.state
  if not (state and state.turn) then
    return
  end
  local route = kong.router.get_route()
  local turn, why = memory.finished_turn(conf, state.turn, {
    status = kong.response.get_status(),
    answer = state.answer,
    request_id = ngx.var.request_id,
    route = route and (route.name or route.id) or nil,
    source = "kong",
  })
  if not turn then
    kong.log.notice("astrocyte not retained: ", why)
    return
  end
  local ok, err = memory.retain_later(conf, turn, kong.log.warn)
  if not ok then
    kong.log.warn("astrocyte retain not scheduled: ", err)
  end
end

return AstrocyteMemory
