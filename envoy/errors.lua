-- mg edge filter: every error leaving Envoy becomes the OpenAI envelope
--   {"error":{"code":..,"message":..,"type":..,"param":..}}  with the right HTTP status.
-- 1) Errors from the gRPC server: it aborts with trailing metadata x-http-status + x-mg-error (the
--    exact envelope, built by service/errors.py); the transcoder surfaces a trailers-only response as
--    headers, and this filter makes them the HTTP status and body.
-- 2) Errors Envoy makes itself (unknown route, malformed JSON, backend down, timeout): wrapped with
--    the default code/type for the status (table generated from service/errors.py).
-- Native gRPC callers passing through Envoy get their gRPC response untouched.

--@@DEFAULTS@@

local PLUMBING = {"x-http-status", "x-mg-error", "grpc-status", "grpc-message",
                  "grpc-accept-encoding", "grpc-status-details-bin"}

local function json_escape(s)
  return (s:gsub('[%c"\\]', function(c)
    if c == '"' then return '\\"' elseif c == '\\' then return '\\\\'
    elseif c == '\n' then return '\\n' elseif c == '\r' then return '\\r' elseif c == '\t' then return '\\t'
    else return string.format('\\u%04x', c:byte()) end
  end))
end

-- `s` with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD. The
-- transcoder's parse errors quote the request body as it came, so a body in another encoding (a
-- Latin-1 "é") would otherwise make an error body that is not UTF-8, which no JSON client can read.
local function valid_utf8(s)
  if not s:find("[\128-\255]") then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = s:byte(i)
    local len = 0
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then len = 3
    elseif c >= 0xF0 and c <= 0xF4 then len = 4 end
    local ok = len > 0 and i + len - 1 <= n
    for k = i + 1, ok and i + len - 1 or i do
      local b = s:byte(k)
      if b < 0x80 or b > 0xBF then ok = false end
    end
    if ok and len > 2 then  -- overlong forms, UTF-16 surrogates, past U+10FFFF
      local b = s:byte(i + 1)
      ok = not ((c == 0xE0 and b < 0xA0) or (c == 0xED and b > 0x9F)
                or (c == 0xF0 and b < 0x90) or (c == 0xF4 and b > 0x8F))
    end
    if ok then
      out[#out + 1] = s:sub(i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = "\239\191\189"
      i = i + 1
    end
  end
  return table.concat(out)
end

-- The still-escaped contents of "message":"..." in a JSON text (google.rpc.Status from the
-- transcoder), or nil.
local function json_message(txt)
  local s = txt:find('"message":"', 1, true)
  if not s then return nil end
  local i = s + 11
  local j = i
  while j <= #txt do
    local c = txt:sub(j, j)
    if c == '\\' then j = j + 2
    elseif c == '"' then return txt:sub(i, j - 1)
    else j = j + 1 end
  end
  return nil
end

function envoy_on_request(handle)
  local hdrs = handle:headers()
  local meta = handle:streamInfo():dynamicMetadata()
  local ct = hdrs:get("content-type") or ""
  if ct:sub(1, 16) == "application/grpc" then
    meta:set("mg", "native_grpc", true)
    return
  end
  -- Envoy's own request id, for responses Envoy makes without the server (backend down, timeout).
  meta:set("mg", "edge_request_id", hdrs:get("x-request-id") or "")
  if hdrs:get(":method") == "HEAD" then meta:set("mg", "head", true) end
end

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get("mg") or {}
  if meta["native_grpc"] then return end
  local hdrs = handle:headers()
  if hdrs:get("x-request-id") == nil and meta["edge_request_id"] ~= nil and meta["edge_request_id"] ~= "" then
    hdrs:add("x-request-id", meta["edge_request_id"])
  end
  local status = tonumber(hdrs:get(":status")) or 200
  if hdrs:get("x-http-status") == nil and status < 400 then
    -- success: hide gRPC plumbing; never buffer (touch) the image body
    hdrs:remove("grpc-status"); hdrs:remove("grpc-message"); hdrs:remove("grpc-accept-encoding")
    return
  end
  -- error: buffer the (small) body. body() yields, so re-fetch the headers afterwards.
  local body = handle:body(true)
  hdrs = handle:headers()
  local envelope = hdrs:get("x-mg-error")
  local http_status = hdrs:get("x-http-status")
  status = tonumber(hdrs:get(":status")) or status
  if envelope == nil or http_status == nil then
    local d = DEFAULTS[status] or {"server_error", "HTTP_" .. status}
    local txt = body:length() > 0 and body:getBytes(0, body:length()) or ""
    local msg = json_message(txt)
    if msg == nil then msg = json_escape((txt:gsub("%s+$", ""))) end
    if msg == "" then msg = "HTTP " .. status end
    msg = valid_utf8(msg)
    envelope = '{"error":{"code":"' .. d[2] .. '","message":"' .. msg .. '","type":"' .. d[1] .. '","param":null}}'
  else
    hdrs:replace(":status", http_status)
  end
  for _, k in ipairs(PLUMBING) do hdrs:remove(k) end
  -- A HEAD answer is the headers a GET would get, without the body (RFC 9110 9.3.2): bytes after
  -- them would be read by the client as the start of the next response on the connection.
  body:setBytes(meta["head"] and "" or envelope)
  hdrs:replace("content-length", tostring(#envelope))
  hdrs:replace("content-type", "application/json")
end
