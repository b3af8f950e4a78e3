-- Configuration of the astrocyte-memory plugin, validated by Kong before the handler sees it.
local typedefs = require("kong.db.schema.typedefs")

return {
  name = "astrocyte-memory",
  fields = {
    { consumer = typedefs.no_consumer },
    { protocols = typedefs.protocols_http },
    {
      config = {
        type = "record",
        fields = {
          { astrocyte_url = typedefs.url({ required = true }) },
          -- The trusted-service key; a vault reference such as {vault://env/astrocyte-key} works.
          { api_key = { type = "string", required = true, encrypted = true, referenceable = true } },
          { bank_template = { type = "string", required = true, default = "user:{consumer}" } },
          { principal_template = { type = "string", required = true, default = "user:{consumer}" } },
          {
            bank_header_allowlist = {
              type = "array",
              required = true,
              default = {},
              elements = { type = "string" },
            },
          },
          { max_memories = { type = "integer", required = true, default = 5, between = { 1, 50 } } },
          {
            max_injected_chars = { type = "integer", required = true, default = 4000, between = { 200, 100000 } },
          },
          { min_score = { type = "number", required = true, default = 0, between = { 0, 1 } } },
          { timeout_ms = { type = "integer", required = true, default = 250, between = { 10, 10000 } } },
          { fail_open = { type = "boolean", required = true, default = true } },
          { retain = { type = "boolean", required = true, default = true } },
          { retain_streams = { type = "boolean", required = true, default = true } },
          {
            retain_timeout_ms = { type = "integer", required = true, default = 3000, between = { 100, 60000 } },
          },
          {
            max_body_bytes = { type = "integer", required = true, default = 1048576, between = { 1024, 67108864 } },
          },
          {
            max_response_bytes = {
              type = "integer",
              required = true,
              default = 262144,
              between = { 1024, 16777216 },
            },
          },
          { ssl_verify = { type = "boolean", required = true, default = true } },
          {
            keepalive_timeout_ms = { type = "integer", required = true, default = 60000, between = { 0, 3600000 } },
          },
          { keepalive_pool_size = { type = "integer", required = true, default = 32, between = { 1, 1000 } } },
        },
      },
    },
  },
}
