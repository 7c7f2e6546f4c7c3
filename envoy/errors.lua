-- mg edge filter: every error leaving Envoy becomes the OpenAI envelope
--   {"error":{"code":..,"message":..,"type":..,"param":..}}  with the right HTTP status.
-- 1) Errors from the gRPC server: it aborts with trailing metadata x-http-status + x-mg-error (the
--    exact envelope, built by service/errors.py); the transcoder surfaces a trailers-only response as
--    headers, and this filter makes them the HTTP status and body.
-- 2) Errors Envoy makes itself (unknown route, malformed JSON, backend down, timeout): wrapped with
--    the default code/type for the status (table generated from service/errors.py).
-- 3) A call without `Authorization` on a route that needs a key (every route not marked public or,
--    as the admin API's are, own_credentials in envoy.yaml): refused here, from its headers, before
--    Envoy buffers its body, with the answer the server gives for it (MISSING_KEY).
-- Native gRPC callers passing through Envoy get their gRPC response untouched.

--@@CONSTANTS@@

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

-- The envelope for an error with HTTP `status` and a JSON-escaped, valid UTF-8 `message`.
local function envelope(status, message)
  local d = DEFAULTS[status] or {status < 500 and "invalid_request_error" or "server_error", "HTTP_" .. status}
  return '{"error":{"code":"' .. d[2] .. '","message":"' .. message .. '","type":"' .. d[1] .. '","param":null}}'
end

-- Headers that would set a deadline or retries for the call: a caller must not cut short (or
-- repeat) a generation that has been sent upstream. Envoy drops these from callers it does not
-- trust; this filter drops them whatever Envoy trusts. grpc-timeout (the gRPC deadline) is dropped
-- from REST calls only: native gRPC callers keep their own deadline.
local DEADLINE_HEADERS = {"x-envoy-upstream-rq-timeout-ms", "x-envoy-upstream-rq-per-try-timeout-ms",
                          "x-envoy-expected-rq-timeout-ms", "x-envoy-retry-on", "x-envoy-retry-grpc-on",
                          "x-envoy-max-retries", "x-envoy-hedge-on-per-try-timeout"}

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
  for _, k in ipairs(DEADLINE_HEADERS) do hdrs:remove(k) end
  local ct = hdrs:get("content-type") or ""
  local native_grpc = ct:sub(1, 16) == "application/grpc"
  if native_grpc then
    meta:set("mg", "native_grpc", true)
  else
    hdrs:remove("grpc-timeout")
    -- Envoy's own request id, for responses Envoy makes without the server (backend down, timeout).
    meta:set("mg", "edge_request_id", hdrs:get("x-request-id") or "")
    -- What was asked for, to name it if no method serves it (the path without its query).
    local path = (hdrs:get(":path") or ""):gsub("%?.*", "")
    meta:set("mg", "route", (hdrs:get(":method") or "") .. " " .. path:sub(1, 200))
    if hdrs:get(":method") == "HEAD" then meta:set("mg", "head", true) end
  end
  local route = handle:metadata()
  if hdrs:get("authorization") == nil and not route:get("public") and not route:get("own_credentials") then
    -- Refused from the headers alone, before any body is buffered. The answer goes through
    -- envoy_on_response like any other, which makes the REST one the envelope.
    if native_grpc then  -- trailers-only, as the server answers
      handle:respond({[":status"] = "200", ["content-type"] = "application/grpc",
                      ["grpc-status"] = "16", ["grpc-message"] = MISSING_KEY}, nil)
    else
      handle:respond({[":status"] = "401"}, MISSING_KEY)
    end
  end
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
  local answer = hdrs:get("x-mg-error")
  local http_status = hdrs:get("x-http-status")
  status = tonumber(hdrs:get(":status")) or status
  if answer == nil or http_status == nil then
    local txt = body:length() > 0 and body:getBytes(0, body:length()) or ""
    local msg = json_message(txt)
    if msg == nil then msg = json_escape((txt:gsub("%s+$", ""))) end
    if msg == "" then msg = "HTTP " .. status end
    if status == 404 and msg:sub(1, 17) == "Could not resolve" then
      -- the transcoder's words for a path or method the API does not have
      msg = "Unknown route: " .. json_escape(meta["route"] or "") .. " is not part of this API. It serves "
            .. "POST /v1/images/generations, /v1/images/edits and /v1/images/variations, GET /v1/models "
            .. "and GET /v1/files/{id}."
    end
    answer = envelope(status, valid_utf8(msg))
  else
    hdrs:replace(":status", http_status)
  end
  for _, k in ipairs(PLUMBING) do hdrs:remove(k) end
  -- A HEAD answer is the headers a GET would get, without the body (RFC 9110 9.3.2): bytes after
  -- them would be read by the client as the start of the next response on the connection.
  body:setBytes(meta["head"] and "" or answer)
  hdrs:replace("content-length", tostring(#answer))
  hdrs:replace("content-type", "application/json")
end
