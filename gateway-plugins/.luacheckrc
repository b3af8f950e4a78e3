-- luacheck settings for the Kong and APISIX plugins, the shared module and their tests.
std = "ngx_lua"
max_line_length = 120
globals = { "kong" }
files["lua-shared/tests/spec"] = { std = "+busted", globals = { "kong", "ngx" } }
files["lua-shared/tests/harness/astrocyte_harness/kong.lua"] = { globals = { "kong" } }
-- Kong phase handlers are methods by convention (`function Plugin:access(conf)`).
files["kong"] = { self = false }
