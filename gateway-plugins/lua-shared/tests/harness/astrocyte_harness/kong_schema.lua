-- TEST-ONLY. Validates a plugin `config` against a Kong plugin schema the way Kong's schema
-- library does for the field kinds our schema uses: type, required, default, between,
-- elements, custom_validator. Returns the config with defaults filled, or nil and errors.
local M = {}

local copy = require("astrocyte_harness.config").copy

local function check(def, value)
  local kind = def.type
  if kind == "integer" then
    if type(value) ~= "number" or value % 1 ~= 0 then
      return "expected an integer"
    end
  elseif kind == "array" or kind == "set" then
    if type(value) ~= "table" then
      return "expected an array"
    end
    for _, element in ipairs(value) do
      local err = check(def.elements, element)
      if err then
        return err
      end
    end
  elseif type(value) ~= kind then
    return "expected a " .. kind
  end
  if def.between and (value < def.between[1] or value > def.between[2]) then
    return ("value should be between %d and %d"):format(def.between[1], def.between[2])
  end
  if def.one_of then
    for _, allowed in ipairs(def.one_of) do
      if allowed == value then
        return nil
      end
    end
    return "value is not one of the allowed values"
  end
  if def.custom_validator then
    local ok, err = def.custom_validator(value)
    if not ok then
      return err
    end
  end
  return nil
end

function M.validate_config(schema, config)
  local record
  for _, field in ipairs(schema.fields) do
    if field.config then
      record = field.config
    end
  end
  local out, errors = {}, {}
  local known = {}
  for _, field in ipairs(record.fields) do
    local name, def = next(field)
    known[name] = true
    local value = config[name]
    if value == nil then
      value = copy(def.default)
    end
    if value == nil then
      if def.required then
        errors[name] = "required field missing"
      end
    else
      errors[name] = check(def, value)
      out[name] = value
    end
  end
  for name in pairs(config) do
    if not known[name] then
      errors[name] = "unknown field"
    end
  end
  if next(errors) then
    return nil, errors
  end
  return out
end

return M
