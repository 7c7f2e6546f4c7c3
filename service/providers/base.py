"""The narrow contract every provider adapter implements.

An adapter translates one `ImageCall` into its provider's wire format, makes the call, and translates
the answer into an `ImageCallResult` (or raises an `MgError`). It never splits `n` (generation.py does
that once for every provider), never reads the environment (settings are injected at construction),
and never decides prices or enforcement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from service.catalog.sizes import Size
from service.generation.reference_images import ReferenceImage


@dataclass(frozen=True)
class PartialImage:
    """An unfinished render of the image being made, for a caller that streams (never charged)."""

    data: bytes
    index: int  # 0-based; coarser first
    media_type: str = "image/png"


# Takes a partial image to stream; never blocks and never raises (a caller that left drops it).
PartialSink = Callable[[PartialImage], None]


def no_job_report(job: str) -> None:
    """ImageCall.report_job for a call whose jobs no one records."""


@dataclass(frozen=True)
class ImageCall:
    """One upstream call: at most the model's `max_images_per_call` images."""

    upstream_model: str
    prompt: str
    n: int
    size: Size
    # time.monotonic() by which the call must be done (retries and polling stay inside it).
    deadline: float
    # Position of this call's first image in the whole request (calls of one request differ by it).
    first_index: int = 0
    quality: str | None = None
    style: str | None = None
    output_format: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_compression: int | None = None
    user: str | None = None
    # This provider's entry of the request's providerOptions, and nothing from other providers.
    options: Mapping[str, object] = field(default_factory=dict)
    # For edit / image-to-image models: the caller's image, already fetched, decoded and checked.
    # With several input images (an edit's `image[]`) it is the first of them, so adapters that take
    # one image need not know about the others.
    reference_image: ReferenceImage | None = None
    # Submit-and-poll adapters call it with a job's id as soon as the provider has accepted the job,
    # so that a job which never answers (charged at its bound) still has its id in the ledger.
    report_job: Callable[[str], None] = field(default=no_job_report, compare=False, repr=False)
    # Every input image of an edit, in the caller's order (the first is reference_image); set one or
    # the other when making a call, the other follows.
    input_images: tuple[ReferenceImage, ...] = ()
    # An edit's mask (a PNG the size of the first image; transparent pixels mark what to change).
    mask: ReferenceImage | None = None
    # An edit's input_fidelity (high | low), for models that take it.
    input_fidelity: str | None = None
    # A variation of reference_image (POST /v1/images/variations): no prompt.
    variation: bool = False
    # A streamed call (n == 1): up to `partial_images` partial images go to `on_partial` as the
    # provider makes them, before the call returns the final image. Adapters whose provider cannot
    # stream ignore both; the caller then gets the final image only.
    partial_images: int = 0
    on_partial: PartialSink | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.input_images and self.reference_image is None:
            object.__setattr__(self, "reference_image", self.input_images[0])
        elif self.reference_image is not None and not self.input_images:
            object.__setattr__(self, "input_images", (self.reference_image,))


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    media_type: str = "image/png"
    revised_prompt: str | None = None


# Past this a reported count is not a real one; it also keeps the sums of a fanned-out request
# inside the response's uint32 fields.
MAX_REPORTED_TOKENS = 100_000_000


@dataclass(frozen=True)
class ProviderUsage:
    """Token counts where the provider reports them."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    input_image_tokens: int | None = None

    @classmethod
    def reported(
        cls, input_tokens: object = None, output_tokens: object = None, input_image_tokens: object = None
    ) -> ProviderUsage | None:
        """The counts from a provider's answer, each kept only if it is a count: a negative,
        fractional, boolean, textual or absurd value counts as not reported. Token counts price the
        call, and a malformed one must neither bill nonsense nor fail a call whose images exist."""
        usage = cls(_count(input_tokens), _count(output_tokens), _count(input_image_tokens))
        return None if usage == cls() else usage


def _count(value: object) -> int | None:
    return value if type(value) is int and 0 <= value <= MAX_REPORTED_TOKENS else None


class WarningType(StrEnum):
    """What kind of thing a warning reports (the kinds of vercel/ai's SharedV4Warning)."""

    # The caller asked for something this provider or model cannot do; it was left out.
    UNSUPPORTED = "unsupported"
    # It was done, but not exactly as asked (the nearest aspect ratio, a size replaced by a tier).
    COMPATIBILITY = "compatibility"
    # Anything else the caller should know (images a filter removed, the provider's own cost report).
    OTHER = "other"


# How each kind reads in logs and responses: "<feature> <verb>: <details>".
_WORDING = {
    WarningType.UNSUPPORTED: " ignored",
    WarningType.COMPATIBILITY: " adjusted",
    WarningType.OTHER: "",
}


@dataclass(frozen=True)
class CallWarning:
    """A request input a provider could not honour as asked, or another thing worth telling.

    `feature` is the request field or the providerOptions path it is about ("style",
    "providerOptions.openai.mask", "n"); `details` says why, in the provider's terms. `str()` is the
    one wording logs and responses use."""

    type: WarningType
    feature: str
    details: str

    def __str__(self) -> str:
        return f"{self.feature}{_WORDING[self.type]}: {self.details}"


def unsupported(feature: str, details: str) -> CallWarning:
    return CallWarning(WarningType.UNSUPPORTED, feature, details)


def adjusted(feature: str, details: str) -> CallWarning:
    return CallWarning(WarningType.COMPATIBILITY, feature, details)


def other(feature: str, details: str) -> CallWarning:
    return CallWarning(WarningType.OTHER, feature, details)


@dataclass(frozen=True)
class ImageCallResult:
    images: Sequence[GeneratedImage]
    usage: ProviderUsage | None = None
    upstream_request_id: str | None = None
    # Inputs the provider could not honour (e.g. a style it lacks), for logs and callers.
    warnings: Sequence[CallWarning] = ()


# Request fields many providers have no equivalent for.
OPENAI_ONLY_FIELDS = ("quality", "style", "background", "moderation", "output_compression")


def ignored_fields(
    call: ImageCall, provider: str, names: Sequence[str] = OPENAI_ONLY_FIELDS
) -> list[CallWarning]:
    """Warnings for the fields in `names` the caller set but this provider cannot honour."""
    return [
        unsupported(name, f"{provider} has no equivalent")
        for name in names
        if getattr(call, name) is not None
    ]


class ImageProvider(Protocol):
    @property
    def name(self) -> str: ...

    async def generate(self, call: ImageCall) -> ImageCallResult: ...

    async def aclose(self) -> None: ...
