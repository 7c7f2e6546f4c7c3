#!/usr/bin/env python3
# Copied from the peer-benchmark harness's fake_openai_images.py so that
# `make bench` is self-contained; keep it byte-for-byte comparable with the one the peers run against.
"""Fast fake OpenAI Images upstream for gateway benchmarks.

Stdlib only (uses uvloop if it is importable). A raw asyncio HTTP/1.1 server
with keep-alive, so that the upstream itself is never the bottleneck when a
gateway in front of it is measured.

Endpoints (OpenAI-shaped):
  POST /v1/images/generations -> {"created": int, "data": [{"b64_json": ..., "revised_prompt": ...}] * n}
                                 ("url" instead of "b64_json" when response_format == "url")
  GET  /v1/models             -> {"object": "list", "data": [...]}
  GET  /v1/models/{id}        -> one model
  GET  /_stats                -> {"requests": {...}} counters (not OpenAI; for the harness)
  anything else               -> 404 with an OpenAI-style error body

Options:
  --host/--port        listen address (loopback only is enforced)
  --delay-ms           fixed artificial delay before answering an images request
  --png-bytes N        size of the returned PNG before base64 (a valid PNG, padded)
  --b64-bytes N        alternatively: target length of the b64_json string
                       (default: a tiny 8x8 PNG, ~100 bytes)
  --api-key KEY        if set, require "Authorization: Bearer KEY" (401 otherwise)

The PNG is a real, decodable PNG: 1024x1024 RGB for large sizes (some rows of
deterministic noise so it does not compress away, then an ancillary tEXt chunk
pads it to the exact size requested), 8x8 for the default small one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import random
import signal
import struct
import sys
import time
import zlib

MODELS = ["dall-e-3", "dall-e-2", "gpt-image-1"]


# --------------------------------------------------------------------------- PNG
def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _png(width: int, height: int, raw_rows: bytes, pad_to: int = 0) -> bytes:
    sig = b"\x89PNG\r\n\x1a\n"
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(raw_rows, 1))
    iend = _chunk(b"IEND", b"")
    out = sig + ihdr + idat
    if pad_to:
        # tEXt chunk overhead: 12 bytes chunk framing + keyword "Comment\0" (8 bytes)
        need = pad_to - (len(out) + len(iend)) - 12 - 8
        if need >= 0:
            out += _chunk(b"tEXt", b"Comment\x00" + b"x" * need)
    return out + iend


def make_png(target_bytes: int) -> bytes:
    """A valid PNG of exactly target_bytes (if >= ~1 KiB), else a tiny 8x8 one."""
    if target_bytes < 1024:
        w = h = 8
        # each row: filter byte 0 + w RGB pixels (a small gradient)
        rows = b"".join(b"\x00" + b"".join(bytes((x * 32, y * 32, 128)) for x in range(w)) for y in range(h))
        return _png(w, h, rows)
    w = h = 1024
    rowlen = 1 + w * 3
    rng = random.Random(1234)
    noise_rows = min(h, max(0, (target_bytes - 4096) // rowlen))
    flat_row = b"\x00" + bytes((40, 90, 160)) * w
    while True:
        parts = []
        for y in range(h):
            if y < noise_rows:
                parts.append(b"\x00" + rng.randbytes(w * 3))
            else:
                parts.append(flat_row)
        png = _png(w, h, b"".join(parts), pad_to=target_bytes)
        if len(png) <= target_bytes or noise_rows == 0:
            return png
        noise_rows -= 1


# --------------------------------------------------------------------------- HTTP
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


class State:
    def __init__(self, args):
        self.args = args
        self.delay = args.delay_ms / 1000.0
        if args.b64_bytes:
            png_bytes = max(0, args.b64_bytes * 3 // 4)
        else:
            png_bytes = args.png_bytes
        self.png = make_png(png_bytes)
        self.b64 = base64.b64encode(self.png)
        self.b64_sha256 = hashlib.sha256(self.b64).hexdigest()
        self.expected_key = args.api_key
        self.counts: dict[str, int] = {}
        # pre-built JSON pieces: item = {"b64_json":"<b64>","revised_prompt":<prompt>}
        self.item_prefix = b'{"b64_json":"' + self.b64 + b'","revised_prompt":'
        self.url_prefix = b'{"url":"http://127.0.0.1/fake-image.png","revised_prompt":'
        now = int(time.time())
        self.models_body = json.dumps(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": now, "owned_by": "system"} for m in MODELS],
            }
        ).encode()

    def bump(self, key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1


def error_body(status: int, message: str, etype: str = "invalid_request_error", code=None) -> bytes:
    return json.dumps({"error": {"message": message, "type": etype, "param": None, "code": code}}).encode()


class HTTPProtocol(asyncio.Protocol):
    __slots__ = ("buf", "busy", "closed", "st", "transport")

    def __init__(self, st: State):
        self.st = st
        self.transport = None
        self.buf = bytearray()
        self.busy = False
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True

    def data_received(self, data: bytes):
        self.buf += data
        if not self.busy:
            self._process()

    # Parse as many complete requests as are buffered; one in flight at a time
    # (responses must go out in order; delayed responses pause the pipeline).
    def _process(self):
        while not self.busy and not self.closed:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end < 0:
                if len(self.buf) > 65536:
                    self._send(400, error_body(400, "header too large"), close=True)
                return
            head = bytes(self.buf[:head_end]).decode("latin-1")
            lines = head.split("\r\n")
            try:
                method, target, version = lines[0].split(" ", 2)
            except ValueError:
                self._send(400, error_body(400, "bad request line"), close=True)
                return
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            body_start = head_end + 4
            te = headers.get("transfer-encoding", "").lower()
            if "chunked" in te:
                parsed = self._dechunk(body_start)
                if parsed is None:
                    return  # need more data
                body, consumed = parsed
            else:
                clen = int(headers.get("content-length", "0") or 0)
                if len(self.buf) - body_start < clen:
                    return
                body = bytes(self.buf[body_start : body_start + clen])
                consumed = body_start + clen
            del self.buf[:consumed]
            conn = headers.get("connection", "").lower()
            keep = not (conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive"))
            self._handle(method, target, headers, body, keep)

    def _dechunk(self, pos: int):
        out = bytearray()
        buf = self.buf
        while True:
            line_end = buf.find(b"\r\n", pos)
            if line_end < 0:
                return None
            size = int(bytes(buf[pos:line_end]).split(b";")[0].strip() or b"0", 16)
            pos = line_end + 2
            if size == 0:
                # skip trailers up to the empty line
                end = buf.find(b"\r\n", pos)
                while end >= 0 and end != pos:
                    pos = end + 2
                    end = buf.find(b"\r\n", pos)
                if end < 0:
                    return None
                return bytes(out), end + 2
            if len(buf) < pos + size + 2:
                return None
            out += buf[pos : pos + size]
            pos += size + 2

    def _handle(self, method, target, headers, body, keep):
        st = self.st
        path = target.split("?", 1)[0]
        if path.endswith("/") and len(path) > 1:
            path = path[:-1]
        st.bump(f"{method} {path}")
        if path == "/_stats" and method == "GET":
            self._send(
                200,
                json.dumps(
                    {
                        "requests": st.counts,
                        "png_bytes": len(st.png),
                        "b64_bytes": len(st.b64),
                        "b64_sha256": st.b64_sha256,
                        "delay_ms": st.args.delay_ms,
                    }
                ).encode(),
                keep,
            )
            return
        if st.expected_key is not None and path.startswith("/v1/"):
            auth = headers.get("authorization", "")
            if auth != "Bearer " + st.expected_key:
                self._send(
                    401,
                    error_body(
                        401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                    ),
                    keep,
                )
                return
        if path == "/v1/images/generations":
            if method != "POST":
                self._send(405, error_body(405, "Method not allowed"), keep)
                return
            try:
                req = json.loads(body or b"{}")
                if not isinstance(req, dict):
                    raise ValueError
            except ValueError:
                self._send(400, error_body(400, "We could not parse the JSON body of your request."), keep)
                return
            prompt = req.get("prompt")
            if not isinstance(prompt, str) or not prompt:
                self._send(400, error_body(400, "'prompt' is a required property"), keep)
                return
            n = req.get("n", 1)
            if not isinstance(n, int) or n < 1 or n > 10:
                self._send(400, error_body(400, "n must be an integer between 1 and 10"), keep)
                return
            prefix = st.url_prefix if req.get("response_format") == "url" else st.item_prefix
            rp = json.dumps("fake revised: " + prompt[:200]).encode()
            item = prefix + rp + b"}"
            body_out = b'{"created":%d,"data":[' % int(time.time()) + b",".join([item] * n) + b"]}"
            if st.delay > 0:
                self.busy = True
                asyncio.get_running_loop().call_later(st.delay, self._delayed, body_out, keep)
            else:
                self._send(200, body_out, keep)
            return
        if path == "/v1/images/edits":
            # An edit: the multipart form is taken as sent (the body's bytes were read in full);
            # one image back, like a generation's.
            if method != "POST" or not headers.get("content-type", "").startswith("multipart/form-data"):
                self._send(400, error_body(400, "Invalid Content-Type header, expected multipart/form-data."), keep)
                return
            rp = json.dumps("fake revised: edit").encode()
            body_out = b'{"created":%d,"data":[' % int(time.time()) + st.item_prefix + rp + b"}]}"
            self._send(200, body_out, keep)
            return
        if path == "/v1/models" and method == "GET":
            self._send(200, st.models_body, keep)
            return
        if path.startswith("/v1/models/") and method == "GET":
            mid = path[len("/v1/models/") :]
            if mid in MODELS:
                self._send(
                    200,
                    json.dumps({"id": mid, "object": "model", "created": 0, "owned_by": "system"}).encode(),
                    keep,
                )
            else:
                self._send(
                    404, error_body(404, f"The model '{mid}' does not exist", code="model_not_found"), keep
                )
            return
        self._send(404, error_body(404, f"Unknown request URL: {method} {path}.", code="unknown_url"), keep)

    def _delayed(self, body_out, keep):
        self.busy = False
        if self.closed:
            return
        self._send(200, body_out, keep)
        if self.buf:
            self._process()

    def _send(self, status: int, body: bytes, keep: bool = True, close: bool = False):
        if self.closed:
            return
        keep = keep and not close
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}\r\n"
            f"content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"openai-processing-ms: {int(self.st.args.delay_ms)}\r\n"
            f"x-request-id: req_fake\r\n"
            f"connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
        ).encode()
        if len(body) > 65536:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head + body)
        if not keep:
            self.transport.close()
            self.closed = True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--png-bytes", type=int, default=0, help="PNG size before base64 (0 = tiny 8x8 PNG)")
    g.add_argument("--b64-bytes", type=int, default=0, help="target length of the b64_json string")
    ap.add_argument("--api-key", default=None, help="require this Bearer key on /v1/*")
    ap.add_argument("--no-uvloop", action="store_true")
    args = ap.parse_args(argv)
    if not (args.host.startswith("127.") or args.host in ("localhost", "::1")):
        sys.exit("refusing to listen on a non-loopback address")

    if not args.no_uvloop:
        try:
            import uvloop  # type: ignore

            uvloop.install()
        except ImportError:
            pass

    st = State(args)

    async def run():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: HTTPProtocol(st), args.host, args.port, backlog=4096, reuse_address=True
        )
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(
            f"fake-openai-images listening on http://{args.host}:{args.port} pid={os.getpid()} "
            f"png={len(st.png)}B b64={len(st.b64)}B delay={args.delay_ms}ms "
            f"loop={type(loop).__module__}",
            flush=True,
        )
        await stop.wait()
        server.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
