"""The built-in offline provider (`local/...`): renders real PNGs with no account and no network.

Each image is a pure function of (model, prompt, seed, image index, quality, style, size): the same
request renders the same bytes, and a different prompt renders a visibly different picture (its own
palette, gradient, shapes, and the prompt as a caption). Options (providerOptions.local):
  seed      integer, default 0: another seed, another picture for the same prompt
  delay_ms  0 to MG_LOCAL_MAX_DELAY_MS (60000 by default): wait this long before answering, to try
            slow-provider behaviour (timeouts, retries) without a real provider. Any key may ask for
            it, and it holds a worker's slot that long, so the cap sits well below the max duration.
Both models take a reference_image (image-to-image: the picture shows through) and edits (local/sketch
up to 4 input images, local/canvas up to 16): every input image, scaled to the asked size, shows
through (blended in equal parts), and with a mask the first image is kept where the mask is opaque
and the render shows only where it is transparent. local/canvas also makes variations: it renders
from its image alone (no prompt: an empty caption band).

Streamed calls get real partial images: the picture rendered coarser (in blocks of 2^(k+1) pixels,
then 2^k, ..., 4), the coarsest first, each a PNG at the requested size; with delay_ms the wait is
spread over the partial images and the final one, as a provider that renders progressively.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import random
from typing import TYPE_CHECKING

from service.catalog.sizes import Size
from service.providers.base import GeneratedImage, ImageCall, ImageCallResult, PartialImage
from service.providers.options import OptionsSchema, integer
from service.providers.spec import ProviderSpec

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    from service.config import ProviderConfig, Settings

NAME = "local"
DEFAULT_MAX_DELAY_MS = 60_000
_SHAPES_BY_QUALITY = {"hd": 48, "high": 48, "medium": 24, "low": 8}
_DEFAULT_SHAPES = 16
_GRAIN = 16  # amplitude of the grain, in 8-bit levels


def options_schema(max_delay_ms: int) -> OptionsSchema:
    """The options, with delay_ms capped by the operator's setting (MG_LOCAL_MAX_DELAY_MS)."""
    return OptionsSchema(NAME, {"seed": integer(0, 2**63 - 1), "delay_ms": integer(0, max_delay_ms)})


OPTIONS = options_schema(DEFAULT_MAX_DELAY_MS)


def _image_key(call: ImageCall, seed: int, index: int) -> bytes:
    parts = (call.upstream_model, call.prompt, str(seed), str(index), call.quality or "", call.style or "")
    inputs = [*call.input_images, *((call.mask,) if call.mask else ())]
    pictures = [hashlib.sha256(picture.data).hexdigest() for picture in inputs]
    return hashlib.sha256("\x1f".join((*parts, *pictures)).encode()).digest()


def _color(rng: random.Random, saturation: float, value: float, alpha: int | None = None) -> tuple[int, ...]:
    red, green, blue = colorsys.hsv_to_rgb(rng.random(), saturation, value)
    rgb = (round(red * 255), round(green * 255), round(blue * 255))
    return rgb if alpha is None else (*rgb, alpha)


def render_png(
    prompt: str,
    size: Size,
    key: bytes,
    shapes: int,
    vivid: bool,
    reference: PILImage | None = None,
    keep: tuple[PILImage, PILImage] | None = None,
) -> bytes:
    """The picture; `reference` (RGB, already at `size`) shows through it. `keep`, an edit's
    (first image, mask as "L" alpha) at `size`, puts the first image back where the mask is opaque."""
    # Pillow is imported by the first render (on its worker thread), not with the module: a worker
    # that never renders or reads an image is spared its ~4 MB.
    from PIL import Image, ImageChops, ImageDraw, ImageFont

    rng = random.Random(key)
    saturation = 0.85 if vivid else 0.35
    width, height = size.width, size.height
    # Background: a two-colour gradient at a prompt-dependent angle.
    # (rotated at twice the size and cropped to the middle, so no corner is left unfilled)
    gradient = Image.linear_gradient("L").resize((512, 512)).rotate(rng.uniform(0, 360))
    mask = gradient.crop((128, 128, 384, 384)).resize((width, height))
    start = Image.new("RGB", (width, height), _color(rng, saturation, 0.95))
    end = Image.new("RGB", (width, height), _color(rng, saturation, 0.35))
    image = Image.composite(start, end, mask)
    if reference is not None:  # image-to-image: the caller's picture shows through the generated one
        image = Image.blend(image, reference, 0.6)
    draw = ImageDraw.Draw(image, "RGBA")
    for _ in range(shapes):
        x0, x1 = sorted(rng.uniform(-0.1, 1.1) * width for _ in range(2))
        y0, y1 = sorted(rng.uniform(-0.1, 1.1) * height for _ in range(2))
        fill = _color(rng, saturation, rng.uniform(0.4, 1.0), alpha=rng.randint(60, 170))
        kind = rng.randrange(3)
        if kind == 0:
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif kind == 1:
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        else:
            points = [(rng.uniform(0, width), rng.uniform(0, height)) for _ in range(3)]
            draw.polygon(points, fill=fill)
    # Film grain, from the same seeded generator: real photographs don't compress to nothing, and
    # neither should these, so size limits are exercised as real providers exercise them.
    noise = Image.frombytes("L", (width, height), rng.randbytes(width * height)).point(
        lambda v: v * _GRAIN // 256
    )
    image = ImageChops.add(image, Image.merge("RGB", (noise, noise, noise)), 1.0, -_GRAIN // 2)
    draw = ImageDraw.Draw(image, "RGBA")
    # Caption: the prompt, so a person can tell the pictures apart at a glance.
    font_size = max(10, min(width, height) // 24)
    font = ImageFont.load_default(size=font_size)
    band = font_size * 2
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0, 140))
    draw.text((font_size // 2, height - band + font_size // 2), prompt[:200], font=font, fill=(255, 255, 255))
    if keep is not None:
        image = Image.composite(keep[0], image, keep[1])
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _blend(pictures: list[PILImage]) -> PILImage:
    """Input images in equal parts (each already RGB at the call's size)."""
    from PIL import Image

    blended = pictures[0]
    for count, picture in enumerate(pictures[1:], start=2):
        blended = Image.blend(blended, picture, 1 / count)  # a running mean
    return blended


def coarser_png(png: bytes, block: int) -> bytes:
    """`png` as a coarser render: averaged over `block` x `block` pixels, at the same size."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    width, height = image.size
    small = image.resize((max(1, width // block), max(1, height // block)), Image.Resampling.BOX)
    out = io.BytesIO()
    small.resize((width, height), Image.Resampling.NEAREST).save(out, format="PNG", compress_level=1)
    return out.getvalue()


class LocalProvider:
    """Offline renderer; behaves like a remote provider (async, optional latency)."""

    name = NAME

    def __init__(self, max_delay_ms: int = DEFAULT_MAX_DELAY_MS) -> None:
        self._options = options_schema(max_delay_ms)

    @classmethod
    def create(cls, config: ProviderConfig, settings: Settings) -> LocalProvider:
        return cls(settings.local_max_delay_ms)

    async def generate(self, call: ImageCall) -> ImageCallResult:
        options, warnings = self._options.parse(call)
        seed, delay_ms = options.get("seed", 0), options.get("delay_ms", 0)
        if delay_ms:
            partials = call.partial_images if call.on_partial is not None else 0
            await asyncio.sleep(delay_ms / 1000 / (partials + 1))
        shapes = _SHAPES_BY_QUALITY.get(call.quality or "", _DEFAULT_SHAPES)
        vivid = call.style != "natural"
        # Decoded once per request, however many calls and images share it (a tiny file can hold a
        # picture of many megapixels).
        width, height = call.size.width, call.size.height
        pictures = [await picture.scaled_rgb(width, height) for picture in call.input_images]
        reference = await asyncio.to_thread(_blend, pictures) if pictures else None
        keep = None
        if call.mask is not None and pictures:
            keep = (pictures[0], await call.mask.scaled_alpha(width, height))
        images = []
        for index in range(call.first_index, call.first_index + call.n):
            key = _image_key(call, seed, index)
            # Rendering is CPU work: keep it off the event loop so other requests keep moving.
            data = await asyncio.to_thread(
                render_png, call.prompt, call.size, key, shapes, vivid, reference, keep
            )
            images.append(GeneratedImage(data=data, media_type="image/png"))
        await self._stream_partials(call, images[0].data, delay_ms)
        return ImageCallResult(images=images, warnings=warnings)

    async def _stream_partials(self, call: ImageCall, final: bytes, delay_ms: int) -> None:
        count = call.partial_images if call.on_partial is not None else 0
        for index in range(count):
            block = 2 ** (count - index + 1)
            data = await asyncio.to_thread(coarser_png, final, block)
            if call.on_partial is not None:
                call.on_partial(PartialImage(data, index))
            if delay_ms:  # the rest of the wait comes between the partial images and the final one
                await asyncio.sleep(delay_ms / 1000 / (count + 1))

    async def aclose(self) -> None:
        return None


PROVIDER = ProviderSpec(NAME, LocalProvider.create, OPTIONS, summary="built in, offline (renders real PNGs)")
