-- Unit-test helpers (busted, plain Lua): a recording `resty.http` and a minimal `ngx`.
local helpers = {}
local unpack_args = table.unpack or unpack -- luacheck: ignore 143

--- Install a fake resty.http answering each POST with `responder(path, payload)`.
function helpers.fake_http(responder)
  local cjson = require("cjson.safe")
  local calls = {}
  package.loaded["resty.http"] = {
    new = function()
      return {
        set_timeouts = function(self, c, s, r)
          self.timeouts = { c, s, r }
        end,
        request_uri = function(self, uri, params)
          local call = { uri = uri, params = params, payload = cjson.decode(params.body), timeouts = self.timeouts }
          calls[#calls + 1] = call
          return responder(call)
        end,
      }
    end,
  }
  return calls
end

function helpers.ok(body)
  return { status = 200, body = require("cjson.safe").encode(body) }
end

--- A minimal ngx for the adapters' phases; `timers` records ngx.timer.at calls.
function helpers.fake_ngx()
  local fake = {
    arg = {},
    header = {},
    status = 200,
    var = { request_id = "req-1" },
    req = { headers = {} },
    timers = {},
    logs = {},
    DEBUG = 8, INFO = 7, NOTICE = 6, WARN = 5, ERR = 4,
  }
  fake.req.get_headers = function()
    return fake.req.headers
  end
  fake.req.clear_header = function(name)
    fake.req.headers[name] = nil
  end
  fake.req.set_body_data = function(body)
    fake.req.body = body
  end
  fake.timer = {
    at = function(delay, fn, ...)
      fake.timers[#fake.timers + 1] = { delay = delay, fn = fn, args = { ... } }
      return true
    end,
  }
  fake.log = function(_, ...)
    fake.logs[#fake.logs + 1] = table.concat({ ... })
  end
  return fake
end

--- Run every recorded timer as the event loop would.
function helpers.run_timers(fake)
  for _, timer in ipairs(fake.timers) do
    timer.fn(false, unpack_args(timer.args))
  end
end

return helpers
