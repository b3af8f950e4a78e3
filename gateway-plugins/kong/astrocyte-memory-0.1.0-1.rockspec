-- LuaRocks package of the Kong plugin. Paths are relative to the repository root:
--   luarocks make gateway-plugins/kong/astrocyte-memory-0.1.0-1.rockspec
package = "astrocyte-memory"
version = "0.1.0-1"
source = {
  url = "git+https://github.com/astrocyte/astrocyte.git",
  tag = "kong-astrocyte-memory-v0.1.0",
}
description = {
  summary = "Kong plugin: long-term memory from Astrocyte for OpenAI-compatible chat completions",
  detailed = [[
Recalls the consumer's memories from Astrocyte into chat completions before the model call
(fail open, within a time budget) and retains each conversation turn afterwards, off the
client's path, including streamed answers.
]],
  license = "Apache-2.0",
}
dependencies = {
  "lua >= 5.1",
}
build = {
  type = "builtin",
  modules = {
    ["kong.plugins.astrocyte-memory.handler"] = "gateway-plugins/kong/kong/plugins/astrocyte-memory/handler.lua",
    ["kong.plugins.astrocyte-memory.schema"] = "gateway-plugins/kong/kong/plugins/astrocyte-memory/schema.lua",
    ["astrocyte.memory"] = "gateway-plugins/lua-shared/astrocyte/memory.lua",
  },
}
