-- TEST-ONLY. The JSON-schema subset APISIX's core.schema.check applies to our plugin schema:
-- object with properties, required, defaults filled in, type, minimum, maximum, minLength,
-- items and pattern (the plugin's one pattern reads the same as a Lua pattern).
local M = {}

local copy = require("astrocyte_harness.config").copy

local function check(def, value, name)
  local kind = def.type
  if kind == "integer" then
    if type(value) ~= "number" or value % 1 ~= 0 then
      return name .. ": wrong type: expected integer"
    end
  elseif kind == "array" then
    if type(value) ~= "table" then
      return name .. ": wrong type: expected array"
    end
    for i, item in ipairs(value) do
      local err = check(def.items, item, name .. "[" .. i .. "]")
      if err then
        return err
      end
    end
  elseif kind == "object" then
    return M.check(def, value)
  elseif type(value) ~= kind then
    return name .. ": wrong type: expected " .. kind
  end
  if def.minimum and value < def.minimum then
    return name .. ": expected " .. value .. " to be at least " .. def.minimum
  end
  if def.maximum and value > def.maximum then
    return name .. ": expected " .. value .. " to be at most " .. def.maximum
  end
  if def.minLength and #value < def.minLength then
    return name .. ": string too short"
  end
  if def.pattern and not value:find(def.pattern) then
    return name .. ": failed to match pattern " .. def.pattern
  end
  return nil
end

function M.check(schema, conf)
  if type(conf) ~= "table" then
    return false, "wrong type: expected object"
  end
  for _, name in ipairs(schema.required or {}) do
    if conf[name] == nil then
      return false, "property \"" .. name .. "\" is required"
    end
  end
  for name, def in pairs(schema.properties or {}) do
    if conf[name] == nil and def.default ~= nil then
      conf[name] = copy(def.default)
    end
    if conf[name] ~= nil then
      local err = check(def, conf[name], "property \"" .. name .. "\" validation failed")
      if err then
        return false, err
      end
    end
  end
  return true
end

return M
