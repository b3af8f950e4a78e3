local cjson = require("cjson.safe")
local helpers = require("helpers")

local function conf(overrides)
  local c = {
    astrocyte_url = "http://astrocyte:8080/",
    api_key = "svc",
    bank_template = "user:{consumer}",
    principal_template = "user:{consumer}",
    bank_header_allowlist = {},
    max_memories = 5,
    max_injected_chars = 4000,
    min_score = 0,
    timeout_ms = 250,
    retain = true,
    retain_streams = true,
    retain_timeout_ms = 3000,
    max_body_bytes = 1048576,
    max_response_bytes = 262144,
    keepalive_timeout_ms = 60000,
    keepalive_pool_size = 32,
  }
  for k, v in pairs(overrides or {}) do
    c[k] = v
  end
  return c
end

local memory

before_each(function()
  package.loaded["astrocyte.memory"] = nil
  memory = require("astrocyte.memory")
end)

describe("identity", function()
  it("takes the bank and principal from the verified consumer", function()
    assert.same({ "user:alice", "user:alice" }, { memory.identity(conf(), "alice") })
  end)

  it("uses a client bank only when the allow-list names it", function()
    local c = conf({ bank_header_allowlist = { "notes:{consumer}" } })
    assert.equal("notes:alice", (memory.identity(c, "alice", "notes:alice")))
    assert.equal("user:alice", (memory.identity(c, "alice", "user:bob")))
    assert.equal("user:alice", (memory.identity(c, "alice", "notes:bob")))
  end)

  it("refuses without a consumer or with a consumer that makes an invalid id", function()
    assert.is_nil(memory.identity(conf(), nil))
    assert.is_nil(memory.identity(conf(), ""))
    assert.is_nil(memory.identity(conf(), "bad name"))
  end)

  it("refuses a consumer name that a bank id cannot hold", function()
    assert.is_nil(memory.identity(conf(), "a%1"))
  end)
end)

describe("parse_request", function()
  it("takes the last user message as the query", function()
    local chat = memory.parse_request(cjson.encode({
      model = "gpt",
      stream = true,
      messages = {
        { role = "user", content = "first" },
        { role = "assistant", content = "a" },
        { role = "user", content = "second" },
      },
    }))
    assert.same({ model = "gpt", stream = true, user_text = "second" }, chat)
  end)

  it("joins text parts and ignores the others", function()
    local chat = memory.parse_request(cjson.encode({
      messages = {
        {
          role = "user",
          content = {
            { type = "text", text = "a" },
            { type = "image_url", image_url = { url = "x" } },
            { type = "text", text = "b" },
          },
        },
      },
    }))
    assert.equal("a\nb", chat.user_text)
  end)

  it("skips bodies that are not chat requests or have no user text", function()
    assert.is_nil(memory.parse_request("not json"))
    assert.is_nil(memory.parse_request('{"input": "x"}'))
    assert.is_nil(memory.parse_request('{"messages": [{"role": "system", "content": "s"}]}'))
    assert.is_nil(memory.parse_request('{"messages": [{"role": "user", "content": "  "}]}'))
  end)
end)

describe("memory_block", function()
  it("escapes memory text so it cannot close the block", function()
    local block, n = memory.memory_block(conf(), { { text = "</astrocyte_memories> & <x>", score = 1 } })
    assert.equal(1, n)
    assert.truthy(block:find("&lt;/astrocyte_memories&gt; &amp; &lt;x&gt;", 1, true))
    local _, closes = block:gsub("</astrocyte_memories>", "")
    assert.equal(1, closes)
  end)

  it("keeps hits above min_score, at most max_memories, within max_injected_chars", function()
    local hits = {}
    for i = 1, 10 do
      hits[i] = { text = ("m%d "):format(i) .. ("x"):rep(50), score = i % 2 == 0 and 0.9 or 0.1 }
    end
    local _, n = memory.memory_block(conf({ min_score = 0.5, max_memories = 3 }), hits)
    assert.equal(3, n)
    local block, m = memory.memory_block(conf({ max_injected_chars = 300 }), hits)
    assert.equal(2, m)
    assert.is_true(#block <= 300)
  end)

  it("gives nothing when no hit qualifies", function()
    assert.is_nil(memory.memory_block(conf({ min_score = 0.95 }), { { text = "a", score = 0.5 } }))
    assert.is_nil(memory.memory_block(conf(), {}))
  end)
end)

describe("inject", function()
  it("puts one system message first and keeps every other byte", function()
    local raw = '{"model":"m","stop":[],"meta":{},"seed":12345678901234567,'
      .. '"x":"a \\" ] [ {","messages":[{"role":"user","content":"hi"}],"z":1}'
    local out = memory.inject(raw, "MEM")
    local decoded = cjson.decode(out)
    assert.equal("system", decoded.messages[1].role)
    assert.equal("MEM", decoded.messages[1].content)
    assert.equal("hi", decoded.messages[2].content)
    local system = cjson.encode({ role = "system", content = "MEM" })
    assert.equal(raw:gsub('"messages":%[', '"messages":[' .. system:gsub("%%", "%%%%") .. ","), out)
  end)

  it("handles an empty messages array and whitespace", function()
    local out = memory.inject(' { "messages" : [ ] } ', "M")
    assert.same({ { role = "system", content = "M" } }, cjson.decode(out).messages)
  end)

  it("finds only the top-level messages key", function()
    local raw = '{"other":{"messages":[1]},"messages":[{"role":"user","content":"q"}]}'
    local decoded = cjson.decode(memory.inject(raw, "M"))
    assert.same({ 1 }, decoded.other.messages)
    assert.equal("system", decoded.messages[1].role)
  end)

  it("refuses bodies whose messages it cannot find", function()
    assert.is_nil(memory.inject('{"messages":"x"}', "M"))
    assert.is_nil(memory.inject("[]", "M"))
    assert.is_nil(memory.inject('{"a":"unterminated', "M"))
  end)
end)

describe("answer accumulation", function()
  local function sse(delta, finish)
    return "data: " .. cjson.encode({ choices = { { delta = delta, finish_reason = finish or cjson.null } } }) .. "\n\n"
  end

  it("joins SSE deltas split across chunks and needs [DONE] or finish_reason", function()
    local answer = memory.answer("sse", 1000)
    local stream = sse({ role = "assistant", content = "Hel" }) .. sse({ content = "lo" }) .. sse({}, "stop")
    for i = 1, #stream, 7 do
      answer:feed(stream:sub(i, i + 6))
    end
    assert.equal("Hello", answer:text())
  end)

  it("reports an interrupted stream", function()
    local answer = memory.answer("sse", 1000)
    answer:feed(sse({ content = "Hel" }))
    local text, why = answer:text()
    assert.is_nil(text)
    assert.equal("stream interrupted before it finished", why)
  end)

  it("accepts [DONE] as the end", function()
    local answer = memory.answer("sse", 1000)
    answer:feed(sse({ content = "ok" }) .. "data: [DONE]\n\n")
    assert.equal("ok", answer:text())
  end)

  it("stops at the cap and says so", function()
    local answer = memory.answer("json", 10)
    answer:feed(("x"):rep(11))
    local text, why = answer:text()
    assert.is_nil(text)
    assert.truthy(why:find("max_response_bytes"))
  end)

  it("reads the assistant text of a JSON answer", function()
    local answer = memory.answer("json", 1000)
    answer:feed('{"choices":[{"message":{"role":"assistant",')
    answer:feed('"content":"hi"}}]}')
    assert.equal("hi", answer:text())
  end)

  it("tells the kind from the content type", function()
    assert.equal("sse", memory.answer_kind("text/event-stream; charset=utf-8"))
    assert.equal("json", memory.answer_kind("application/json"))
    assert.is_nil(memory.answer_kind("text/html"))
    assert.is_nil(memory.answer_kind(nil))
  end)
end)

describe("access", function()
  local body = cjson.encode({ model = "m", messages = { { role = "user", content = "tea?" } } })

  it("recalls as the trusted service acting for the consumer and injects on a hit", function()
    local calls = helpers.fake_http(function()
      return helpers.ok({ hits = { { text = "likes green tea", score = 0.8 } } })
    end)
    local state = memory.access(conf(), { consumer = "alice", body = body })
    assert.equal("hit", state.status)
    assert.equal("system", cjson.decode(state.body).messages[1].role)
    local call = calls[1]
    assert.equal("http://astrocyte:8080/v1/recall", call.uri)
    assert.equal("svc", call.params.headers["X-API-Key"])
    assert.equal("user:alice", call.params.headers["X-Astrocyte-Principal"])
    assert.same({ query = "tea?", bank_id = "user:alice", max_results = 5 }, call.payload)
    assert.same({ 250, 250, 250 }, call.timeouts)
    assert.equal(32, call.params.keepalive_pool)
    assert.equal("tea?", state.turn.user_text)
  end)

  it("is a miss with no hits and when the bank does not exist yet", function()
    helpers.fake_http(function()
      return helpers.ok({ hits = {} })
    end)
    assert.equal("miss", memory.access(conf(), { consumer = "alice", body = body }).status)
    helpers.fake_http(function()
      return { status = 404, body = '{"code":"bank_not_found"}' }
    end)
    assert.equal("miss", memory.access(conf(), { consumer = "alice", body = body }).status)
  end)

  it("is an error, keeping the turn to retain, when Astrocyte fails", function()
    local failures = {
      { nil, "connection refused" },
      { { status = 401, body = "{}" } },
      { { status = 200, body = "<html>" } },
    }
    for _, answer in ipairs(failures) do
      helpers.fake_http(function()
        return answer[1], answer[2]
      end)
      local state = memory.access(conf(), { consumer = "alice", body = body })
      assert.equal("error", state.status)
      assert.is_nil(state.body)
      assert.truthy(state.turn)
    end
  end)

  it("skips without calling Astrocyte when there is nothing to do", function()
    local calls = helpers.fake_http(function()
      error("must not be called")
    end)
    assert.equal("skipped", memory.access(conf(), { consumer = nil, body = body }).status)
    assert.equal("skipped", memory.access(conf(), { consumer = "alice", body = nil }).status)
    assert.equal("skipped", memory.access(conf({ max_body_bytes = 10 }), { consumer = "alice", body = body }).status)
    assert.equal("skipped", memory.access(conf(), { consumer = "alice", body = "[]" }).status)
    assert.equal(0, #calls)
  end)

  it("keeps no turn when retain is off", function()
    helpers.fake_http(function()
      return helpers.ok({ hits = {} })
    end)
    assert.is_nil(memory.access(conf({ retain = false }), { consumer = "alice", body = body }).turn)
  end)
end)

describe("finished_turn and retain", function()
  local function turn(stream)
    return { bank = "user:alice", principal = "user:alice", model = "m", stream = stream, user_text = "q" }
  end

  it("retains user and assistant turns with the request id as idempotency key", function()
    local answer = memory.answer("json", 1000)
    answer:feed('{"choices":[{"message":{"content":"a"}}]}')
    local done = memory.finished_turn(conf(), turn(false), {
      status = 200, answer = answer, request_id = "r1", route = "chat", source = "kong",
    })
    local calls = helpers.fake_http(function()
      return helpers.ok({ stored = true })
    end)
    assert.truthy(memory.retain(conf(), done))
    assert.same({
      content = "user: q\nassistant: a",
      bank_id = "user:alice",
      metadata = { request_id = "r1", route = "chat", model = "m" },
      tags = { "conversation" },
      source = "kong",
      idempotency_key = "kong:r1",
    }, calls[1].payload)
    assert.same({ 3000, 3000, 3000 }, calls[1].timeouts)
  end)

  it("prefers text the platform extracted (APISIX ai-proxy)", function()
    local done = memory.finished_turn(conf(), turn(true), { status = 200, answer_text = "from ai-proxy" })
    assert.equal("from ai-proxy", done.assistant_text)
  end)

  it("retains nothing for failed, unread, stream-disabled or interrupted answers", function()
    assert.is_nil(memory.finished_turn(conf(), nil, { status = 200 }))
    assert.is_nil(memory.finished_turn(conf(), turn(false), { status = 500 }))
    assert.is_nil(memory.finished_turn(conf(), turn(false), { status = 200 }))
    local no_streams = conf({ retain_streams = false })
    assert.is_nil(memory.finished_turn(no_streams, turn(true), { status = 200, answer_text = "x" }))
    local cut = memory.answer("sse", 100)
    cut:feed('data: {"choices":[{"delta":{"content":"x"}}]}\n')
    assert.is_nil(memory.finished_turn(conf(), turn(true), { status = 200, answer = cut }))
  end)
end)
