-- TEST-ONLY. The few kong.db.schema.typedefs the plugin's schema uses, in Kong's shape.
local typedefs = {}

local function url_validator(value)
  if not value:find("^https?://[^/]+") then
    return nil, "missing host in url"
  end
  return true
end

function typedefs.url(overrides)
  local field = { type = "string", custom_validator = url_validator }
  for key, value in pairs(overrides or {}) do
    field[key] = value
  end
  return field
end

typedefs.no_consumer = { type = "foreign", reference = "consumers", eq = ngx and ngx.null or false }
typedefs.protocols_http = {
  type = "set",
  required = true,
  default = { "grpc", "grpcs", "http", "https" },
  elements = { type = "string", one_of = { "grpc", "grpcs", "http", "https" } },
}

return typedefs
