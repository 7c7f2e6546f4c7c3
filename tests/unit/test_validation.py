from __future__ import annotations

from typing import Any, cast

import pytest
from mg.v1 import image_generation_pb2 as pb

from service.catalog.catalog import load_catalog
from service.catalog.sizes import Size
from service.errors import BadRequest, MgError, ModelNotAllowed, ModelNotFound
from service.generation.admission import admit_targets
from service.generation.validation import GenerationRequest
from service.stores.base import Project

CATALOG = load_catalog()
EVERY_MODEL = Project("proj_1", "open", 0.0)


def admitted(
    message: pb.GenerateImagesRequest,
    project: Project = EVERY_MODEL,
    configured: tuple[str, ...] = ("local",),
) -> GenerationRequest:
    return admit_targets(message, project, CATALOG, configured).first


def request(**fields: object) -> pb.GenerateImagesRequest:
    base: dict[str, object] = {"model": "local/sketch", "prompt": "a cat"}
    options = fields.pop("provider_options", None)
    message = pb.GenerateImagesRequest()
    for name, value in {**base, **fields}.items():
        setattr(message, name, value)
    if options is not None:
        message.provider_options.update(cast(dict[str, Any], options))
    return message


def test_defaults() -> None:
    valid = admitted(request())
    assert (valid.n, valid.size, valid.response_format) == (1, Size(1024, 1024), "b64_json")
    assert valid.model.id == "local/sketch" and valid.model_name == "local/sketch"


def test_size_rule_models_take_any_size_inside_the_rule() -> None:
    assert admitted(request(model="local/canvas", size="320x240")).size == Size(320, 240)


@pytest.mark.parametrize(
    ("fields", "error", "param"),
    [
        ({"model": ""}, BadRequest, "model"),
        ({"model": "missing/model"}, ModelNotFound, "model"),
        ({"prompt": ""}, BadRequest, "prompt"),
        ({"prompt": "   \n"}, BadRequest, "prompt"),
        ({"prompt": "x" * 8001}, BadRequest, "prompt"),
        ({"n": 0}, BadRequest, "n"),
        ({"n": 9}, BadRequest, "n"),
        ({"n": -1}, BadRequest, "n"),
        ({"size": "1024"}, BadRequest, "size"),
        ({"size": "0x10"}, BadRequest, "size"),
        ({"size": "1024X1024"}, BadRequest, "size"),
        ({"size": "640x480"}, BadRequest, "size"),
        ({"model": "local/canvas", "size": "100x100"}, BadRequest, "size"),  # not a multiple of 16
        ({"model": "local/canvas", "size": "4096x4096"}, BadRequest, "size"),
        ({"quality": "ultra"}, BadRequest, "quality"),
        ({"style": "loud"}, BadRequest, "style"),
        ({"response_format": "png"}, BadRequest, "response_format"),
        ({"user": "u" * 257}, BadRequest, "user"),
        ({"background": "pink"}, BadRequest, "background"),
        ({"moderation": "none"}, BadRequest, "moderation"),
        ({"output_format": "gif"}, BadRequest, "output_format"),
        ({"output_format": "webp"}, BadRequest, "output_format"),  # valid enum, not offered by the model
        ({"output_compression": 101}, BadRequest, "output_compression"),
        ({"stream": True}, BadRequest, "stream"),
        ({"partial_images": 4}, BadRequest, "partial_images"),
        (
            {"model": "stability/stable-image-core", "reference_image": "aGk="},
            ModelNotAllowed,
            "reference_image",
        ),
        ({"model": "stability/inpaint"}, ModelNotAllowed, "model"),  # edits only: it needs an image
        ({"model": "bfl/flux-pro-1.0-fill", "size": "64x64"}, ModelNotAllowed, "model"),
        ({"provider_options": {"local": "fast"}}, BadRequest, "providerOptions.local"),
    ],
)
def test_bad_input_names_the_field(fields: dict[str, object], error: type[MgError], param: str) -> None:
    with pytest.raises(error) as caught:
        admitted(request(**fields))
    assert caught.value.param == param


def test_an_edit_only_model_takes_a_generation_with_a_reference_image() -> None:
    message = request(model="stability/inpaint", reference_image="aGk=", size="64x64")
    assert admitted(message, configured=("stability",)).model.id == "stability/inpaint"


def test_style_is_dropped_with_a_warning_for_models_without_styles() -> None:
    valid = admitted(request(model="local/canvas", style="vivid"))
    assert valid.style is None and valid.warnings


def test_only_the_models_provider_options_are_kept() -> None:
    valid = admitted(request(provider_options={"local": {"seed": 3}, "openai": {"background": "x"}}))
    assert valid.provider_options == {"seed": 3}


def test_whole_numbers_come_back_as_ints_after_the_struct() -> None:
    options = {"local": {"seed": 3, "scale": 1.5, "nested": [{"n": 2}]}}
    valid = admitted(request(provider_options=options))
    assert valid.provider_options == {"seed": 3, "scale": 1.5, "nested": [{"n": 2}]}
    assert isinstance(valid.provider_options["seed"], int)


def test_the_allowlist_is_checked_on_the_resolved_model() -> None:
    project = Project("proj_2", "narrow", 0.0, allow=("local/canvas",))
    with pytest.raises(ModelNotAllowed) as caught:
        admitted(request(model="local/sketch"), project)
    assert caught.value.param == "model" and "narrow" in caught.value.message
    assert admitted(request(model="local/canvas", size="256x256"), project).model.id == "local/canvas"


def test_a_model_whose_provider_is_not_configured_is_not_found_before_anything_runs() -> None:
    with pytest.raises(ModelNotFound) as caught:
        admitted(request(model="openai/gpt-image-1"))
    assert caught.value.code == "PROVIDER_NOT_CONFIGURED" and "OPENAI_API_KEY" in caught.value.message


def test_a_model_outside_the_allowlist_is_refused_before_its_request_is_validated() -> None:
    # a request both out of the allowlist and invalid: 403, so a project learns nothing of the model
    project = Project("proj_2", "narrow", 0.0, allow=("local/canvas",))
    with pytest.raises(ModelNotAllowed):
        admitted(request(model="local/sketch", n=99), project)
