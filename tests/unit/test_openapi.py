"""docs/openapi.json: generated from the proto, in sync, valid OpenAPI 3.1, and in step with OpenAI's
own Images schema where the two describe the same thing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

from service.api import openapi

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"
OPENAI_SCHEMA = ROOT / "tests" / "openai-images-schema.json"

# Our schema -> OpenAI's definition of the same object.
COUNTERPARTS = {
    "GenerateImagesRequest": "CreateImageRequest",
    "ImagesResponse": "ImagesResponse",
    "Image": "Image",
    "Usage": "ImageGenUsage",
    "InputTokensDetails": "ImageGenInputUsageDetails",
    "ImageGenerationEvent": "ImageGenCompletedEvent",
    "ErrorResponse": "ErrorResponse",
    "Error": "Error",
}
# OpenAI's fields mg does not have (each a known, documented difference).
NOT_IN_MG = {
    "ImageGenUsage": {"output_tokens_details"},  # mg reports output tokens without a breakdown
    "ImagesResponse": set(),
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return dict(json.loads(openapi.document()))


def test_the_committed_document_is_the_generated_one() -> None:
    assert COMMITTED.read_bytes() == openapi.document(), (
        "docs/openapi.json is out of date: run `.venv/bin/python -m service.api.openapi docs/openapi.json`"
    )


def test_it_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_the_validator_rejects_a_broken_document(document: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(document))
    broken["paths"]["/v1/models"]["get"]["parameters"] = [{"name": "id", "in": "body"}]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_http_binding_of_the_proto_is_an_operation(document: dict[str, Any]) -> None:
    operations = {
        (path, verb): op["operationId"]
        for path, item in document["paths"].items()
        for verb, op in item.items()
    }
    assert operations == {
        ("/v1/images/generations", "post"): "GenerateImagesJson",
        ("/v1/images/edits", "post"): "EditImagesHttp",
        ("/v1/images/variations", "post"): "CreateImageVariationsHttp",
        ("/v1/models", "get"): "ListModels",
        ("/v1/models/{id}", "get"): "GetModel",
        ("/v1/files/{id}", "get"): "GetFile",
        ("/healthz", "get"): "Liveness",
        ("/readyz", "get"): "Readiness",
        ("/openapi.json", "get"): "ApiDocument",
        ("/v1/admin/session", "post"): "CreateSession",
        ("/v1/admin/session", "delete"): "DeleteSession",
        ("/v1/admin/projects", "get"): "ListProjects",
        ("/v1/admin/projects", "post"): "CreateProject",
        ("/v1/admin/projects/{name}", "get"): "GetProject",
        ("/v1/admin/projects/{name}", "patch"): "UpdateProject",
        ("/v1/admin/keys", "get"): "ListKeys",
        ("/v1/admin/keys", "post"): "CreateKey",
        ("/v1/admin/keys/{id}/revoke", "post"): "RevokeKey",
        ("/v1/admin/usage", "get"): "GetUsage",
        ("/v1/admin/ledger", "get"): "ListLedger",
        ("/v1/admin/inflight", "get"): "ListInFlight",
        ("/v1/admin/audit", "get"): "ListAudit",
        ("/v1/admin/catalog", "get"): "ListCatalog",
        ("/v1/admin/thumbnails/{request_id}/{index}", "get"): "GetThumbnail",
        ("/console", "get"): "GetConsoleFile",
        ("/console/{path}", "get"): "GetConsoleFile2",
    }


def test_admin_routes_take_the_admin_credentials_and_say_so(document: dict[str, Any]) -> None:
    paths = document["paths"]
    either: list[dict[str, list[str]]] = [{"adminToken": []}, {"adminSession": []}]
    assert paths["/v1/admin/projects"]["get"]["security"] == either
    assert paths["/v1/admin/catalog"]["get"]["security"] == either  # (the console's reads too)
    assert paths["/v1/admin/session"]["post"]["security"] == [{"adminToken": []}]
    assert paths["/console"]["get"]["security"] == []
    session = document["components"]["securitySchemes"]["adminSession"]
    assert (session["in"], session["name"]) == ("cookie", "mg_admin_session")
    # A change made with the session needs the CSRF header (403 without); reads do not.
    patch = paths["/v1/admin/projects/{name}"]["patch"]
    assert [p["name"] for p in patch["parameters"]] == ["name", "x-mg-csrf"]
    assert {"401", "403", "404"} <= set(patch["responses"])
    listing = paths["/v1/admin/projects"]["get"]
    assert "403" not in listing["responses"] and "parameters" not in listing
    assert "401" not in paths["/console"]["get"]["responses"]


def test_what_the_proto_cannot_say_is_stated(document: dict[str, Any]) -> None:
    paths = document["paths"]
    edit = paths["/v1/images/edits"]["post"]
    form = edit["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["image"]["type"] == "array" and "image[]" in form["properties"]
    assert form["properties"]["mask"]["type"] == "string"
    assert form["required"] == ["model", "prompt"]
    assert edit["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/EditImagesRequest")
    generations = paths["/v1/images/generations"]["post"]["responses"]["200"]["content"]
    assert set(generations) == {"application/json", "text/event-stream"}
    error = document["components"]["responses"]["Error402"]["content"]["application/json"]["schema"]
    assert error["$ref"].endswith("/ErrorResponse")
    # Public routes need no key; the rest answer 401 without one.
    assert paths["/healthz"]["get"]["security"] == [] and "401" not in paths["/healthz"]["get"]["responses"]
    assert "security" not in paths["/v1/models"]["get"] and "401" in paths["/v1/models"]["get"]["responses"]


def test_request_fields_carry_the_servers_own_limits(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    generate = schemas["GenerateImagesRequest"]
    assert generate["required"] == ["model", "prompt"]
    assert generate["properties"]["n"]["maximum"] == 8
    assert generate["properties"]["response_format"]["enum"] == ["b64_json", "url"]
    # (answers require nothing: the transcoder omits fields at their default)
    assert "required" not in schemas["ImagesResponse"]


def _types(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    if "$ref" in schema:
        return {"object"}
    if "allOf" in schema:
        return set.intersection(*(_types(s, defs) for s in schema["allOf"]))
    if "anyOf" in schema or "oneOf" in schema:
        return set.union(*(_types(s, defs) for s in schema.get("anyOf", schema.get("oneOf", []))))
    kind = schema.get("type")
    if kind is None:
        return {"object"} if "properties" in schema else {"any"}
    return {kind} if isinstance(kind, str) else set(kind)


def _enum(schema: dict[str, Any]) -> set[Any] | None:
    if "enum" in schema:
        return set(schema["enum"]) - {None}
    branches = [s for s in schema.get("anyOf", []) if "enum" in s]
    return None if not branches or any(s == {"type": "string"} for s in schema.get("anyOf", [])) else set()


@pytest.mark.parametrize("ours, theirs", sorted(COUNTERPARTS.items()))
def test_field_names_and_types_match_openais_schema(ours: str, theirs: str, document: dict[str, Any]) -> None:
    mine = document["components"]["schemas"][ours]["properties"]
    official_defs = json.loads(OPENAI_SCHEMA.read_text())["$defs"]
    official = official_defs[theirs]
    shared = set(mine) & set(official["properties"])
    assert shared, f"{ours} and OpenAI's {theirs} share no field"
    for name in sorted(shared):
        their_field = official["properties"][name]
        if "$ref" in their_field:
            their_field = official_defs[their_field["$ref"].rsplit("/", 1)[1]]
        our_types = _types(mine[name], {}) - {"null"}
        their_types = _types(their_field, official_defs) - {"null"}
        if their_types != {"any"}:
            assert our_types <= their_types, f"{ours}.{name}: mg {our_types}, OpenAI {their_types}"
        our_enum, their_enum = mine[name].get("enum"), _enum(their_field)
        if our_enum and their_enum:
            assert set(our_enum) <= their_enum, f"{ours}.{name}: {our_enum} not within OpenAI's {their_enum}"
    missing = set(official["properties"]) - set(mine)
    if theirs in NOT_IN_MG:
        assert missing == NOT_IN_MG[theirs], f"{ours} lacks {missing} of OpenAI's {theirs}"
