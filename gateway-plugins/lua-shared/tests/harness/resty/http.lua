-- TEST-ONLY. A stand-in for lua-resty-http, which Kong and APISIX bundle and Debian does not
-- package. It implements, over ngx.socket.tcp, only the subset the plugins call: new,
-- set_timeout(s), connect, request_uri (HTTP/1.1, Content-Length or chunked answers) with
-- keep-alive pooling, set_keepalive and close. Plain http only. Never ship it.
local _M = { _TEST_ONLY = true }
local mt = { __index = _M }

function _M.new()
  local sock, err = ngx.socket.tcp()
  if not sock then
    return nil, err
  end
  return setmetatable({ sock = sock }, mt)
end

function _M:set_timeout(ms)
  self.sock:settimeout(ms)
end

function _M:set_timeouts(connect_ms, send_ms, read_ms)
  self.sock:settimeouts(connect_ms, send_ms, read_ms)
end

function _M:connect(host, port, options)
  return self.sock:connect(host, port, options)
end

function _M:set_keepalive(timeout_ms, pool_size)
  return self.sock:setkeepalive(timeout_ms, pool_size)
end

function _M:close()
  return self.sock:close()
end

local function parse_uri(uri)
  local scheme, host, port, path = uri:match("^(https?)://([^:/?]+):?(%d*)(.*)$")
  if not scheme then
    return nil, "bad uri: " .. uri
  end
  if scheme ~= "http" then
    return nil, "the test-only resty.http speaks plain http only"
  end
  return host, tonumber(port) or 80, path ~= "" and path or "/"
end

local function read_headers(sock)
  local status_line, err = sock:receive("*l")
  if not status_line then
    return nil, err
  end
  local status = tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then
    return nil, "bad status line"
  end
  local headers = {}
  while true do
    local line, line_err = sock:receive("*l")
    if not line then
      return nil, line_err
    end
    if line == "" then
      break
    end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then
      headers[name:lower()] = value
    end
  end
  return status, headers
end

local function read_chunked(sock)
  local parts = {}
  while true do
    local size_line, err = sock:receive("*l")
    if not size_line then
      return nil, err
    end
    local size = tonumber(size_line:match("^%x+"), 16)
    if not size then
      return nil, "bad chunk size"
    end
    if size == 0 then
      repeat
        local trailer, trailer_err = sock:receive("*l")
        if not trailer then
          return nil, trailer_err
        end
      until trailer == ""
      return table.concat(parts)
    end
    local data, data_err = sock:receive(size)
    if not data then
      return nil, data_err
    end
    parts[#parts + 1] = data
    sock:receive("*l")
  end
end

function _M:request_uri(uri, params)
  local host, port, path = parse_uri(uri)
  if not host then
    return nil, port
  end
  params = params or {}
  local pool = host .. ":" .. port
  local ok, err = self.sock:connect(host, port, { pool = pool, pool_size = params.keepalive_pool })
  if not ok then
    return nil, err
  end
  local body = params.body or ""
  local lines = { (params.method or "GET") .. " " .. path .. " HTTP/1.1", "Host: " .. host .. ":" .. port }
  for name, value in pairs(params.headers or {}) do
    lines[#lines + 1] = name .. ": " .. value
  end
  lines[#lines + 1] = "Content-Length: " .. #body
  local sent, send_err = self.sock:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. body)
  if not sent then
    self.sock:close()
    return nil, send_err
  end
  local status, headers = read_headers(self.sock)
  if not status then
    self.sock:close()
    return nil, headers
  end
  local answer, read_err
  if headers["transfer-encoding"] == "chunked" then
    answer, read_err = read_chunked(self.sock)
  elseif headers["content-length"] then
    answer, read_err = self.sock:receive(tonumber(headers["content-length"]))
  else
    answer, read_err = self.sock:receive("*a")
    headers.connection = "close"
  end
  if not answer then
    self.sock:close()
    return nil, read_err
  end
  if params.keepalive == false or (headers.connection or ""):lower() == "close" then
    self.sock:close()
  else
    self.sock:setkeepalive(params.keepalive_timeout, params.keepalive_pool)
  end
  return { status = status, headers = headers, body = answer }
end

return _M
