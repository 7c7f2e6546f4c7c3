"""A fast streaming upstream for the stream-c8 benchmark: POST /v1/images/generations answers
OpenAI's server-sent events (`partial_images` partial images, then the completed event with usage),
with an optional pause before each event. asyncio (aiohttp), so the upstream is never what is
measured; the fake in tests/fakes checks every request against the schema, which is its job, not
this one's.

    python tests/bench/stream_upstream.py --port N [--pause-ms MS]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

# An 8x8 PNG.
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGO0sbFhwAaYsIoOWgkAkkAAxO58a5AAAAAASUVORK5CYII="
)
USAGE = {"input_tokens": 12, "output_tokens": 4160, "total_tokens": 4172,
         "input_tokens_details": {"text_tokens": 12, "image_tokens": 0}}  # fmt: skip


def frame(event: dict[str, object]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


async def generations(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    pause_s = request.app["pause_s"]
    echo = {"created_at": int(time.time()), "size": "1024x1024", "quality": "auto", "background": "auto",
            "output_format": "png", "b64_json": PNG_B64}  # fmt: skip
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for index in range(body.get("partial_images") or 0):
        await asyncio.sleep(pause_s)
        await response.write(
            frame({"type": "image_generation.partial_image", **echo, "partial_image_index": index})
        )
    await asyncio.sleep(pause_s)
    await response.write(frame({"type": "image_generation.completed", **echo, "usage": USAGE}))
    await response.write_eof()
    return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pause-ms", type=int, default=0)
    args = parser.parse_args()
    app = web.Application()
    app["pause_s"] = args.pause_ms / 1000
    app.router.add_post("/v1/images/generations", generations)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
