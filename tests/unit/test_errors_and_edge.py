from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
import yaml

from service import errors
from service.config import Settings, SettingsError, load_settings
from service.runtime.edge import render_config, render_lua
from tests.support.markdown import cells, first_table

ROOT = Path(__file__).resolve().parents[2]


def test_codes_are_unique_and_every_status_has_an_edge_default() -> None:
    codes = [e.kind.code for e in errors.ALL_ERRORS]
    assert len(codes) == len(set(codes))
    assert set(errors.EDGE_DEFAULTS) == {e.kind.http_status for e in errors.ALL_ERRORS}
    assert errors.EDGE_DEFAULTS[404].code == "NOT_FOUND" and errors.EDGE_DEFAULTS[403].code == "FORBIDDEN"


def test_the_readme_error_table_is_the_error_tree() -> None:
    """Every code in service/errors.py is in docs/api.md's table, on a row with its HTTP and gRPC
    status, and the table has no code the tree lacks."""
    rows = first_table((ROOT / "docs" / "api.md").read_text(), "## Errors")[2:]
    listed: dict[str, tuple[str, str]] = {}
    for row in rows:
        http, codes, grpc_status, _ = cells(row)
        for code in re.findall(r"`([A-Z_]+)`", codes):
            assert code not in listed, f"{code} is listed twice"
            listed[code] = (http, grpc_status)
    tree = {
        error.kind.code: (str(error.kind.http_status), error.kind.grpc_status) for error in errors.ALL_ERRORS
    }
    assert set(tree) - set(listed) == set(), "codes missing from docs/api.md's error table"
    assert set(listed) - set(tree) == set(), "docs/api.md's error table lists codes service/errors.py lacks"
    assert listed == tree


def test_a_sharper_code_is_its_general_kind() -> None:
    for error in errors.ALL_ERRORS:
        general = next(
            base for base in error.__mro__ if base in errors.ALL_ERRORS and base.__base__ is errors.MgError
        )
        assert (error.kind.http_status, error.kind.grpc_status, error.kind.type) == (
            general.kind.http_status,
            general.kind.grpc_status,
            general.kind.type,
        ), error.__name__


def test_a_stored_error_comes_back_as_its_class() -> None:
    error = errors.InvalidMask("mask must be a base64 PNG image.", param="providerOptions.openai.mask")
    restored = errors.error_from_json(errors.error_to_json(error))
    assert type(restored) is errors.InvalidMask and restored.envelope() == error.envelope()
    # A record naming the general class and a sharper code gets the sharper class.
    fields = {
        "kind": "BadRequest",
        "message": "m",
        "param": "size",
        "code": "INVALID_SIZE",
        "retry_after_s": None,
    }
    by_general_name = json.dumps(fields)
    assert type(errors.error_from_json(by_general_name)) is errors.InvalidSize


def test_status_metadata_carries_the_envelope() -> None:
    error = errors.RateLimited("slow down", retry_after_s=3)
    code, message, metadata = errors.to_grpc_status(error, (("x-request-id", "r1"),))
    values = dict(metadata)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and message == "slow down"
    assert (
        values["x-http-status"] == "429" and values["retry-after"] == "3" and values["x-request-id"] == "r1"
    )
    envelope = json.loads(str(values["x-mg-error"]))
    assert envelope == {
        "error": {"code": "RATE_LIMITED", "message": "slow down", "type": "rate_limit_error", "param": None}
    }


def test_non_ascii_messages_stay_valid_metadata() -> None:
    _, _, metadata = errors.to_grpc_status(errors.BadRequest("prompt «é» \n bad"))
    assert str(dict(metadata)["x-mg-error"]).isascii()


def test_lua_gets_the_default_table_from_the_error_module() -> None:
    lua = render_lua()
    assert '[503] = {"server_error", "UNAVAILABLE"},' in lua and "--@@CONSTANTS@@" not in lua


def test_edge_timeouts_outlast_the_max_duration() -> None:
    settings = replace(Settings(), max_duration_s=300)
    config = yaml.safe_load(render_config(settings, __import__("pathlib").Path("/x.lua")))
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    route = manager["route_config"]["virtual_hosts"][0]["routes"][0]["route"]
    for value in (route["timeout"], route["idle_timeout"], manager["stream_idle_timeout"]):
        assert float(value.removesuffix("s")) > 300


def test_settings_come_from_mg_variables() -> None:
    settings = load_settings({"MG_HTTP_PORT": "9000", "MG_MAX_DURATION_S": "2.5", "MG_WORKERS": ""})
    assert settings.http_port == 9000 and settings.max_duration_s == 2.5 and settings.workers == 0


def test_booleans_take_only_words_that_say_yes_or_no() -> None:
    for word, value in (
        ("true", True),
        ("On", True),
        ("1", True),
        ("false", False),
        ("no", False),
        ("", False),
    ):
        assert load_settings({"MG_LOG_PROMPTS": word}).log_prompts is value
    with pytest.raises(SettingsError, match="MG_LOG_PROMPTS='ture' is not a boolean"):
        load_settings({"MG_LOG_PROMPTS": "ture"})


def test_bad_settings_are_refused_with_the_variable_named() -> None:
    for environ in ({"MG_HTTP_PORT": "eighty"}, {"MG_WORKERS": "-1"}, {"MG_MAX_DURATION_S": "0"}):
        try:
            load_settings(environ)
        except SettingsError as exc:
            assert next(iter(environ)) in str(exc)
        else:
            raise AssertionError(f"{environ} accepted")
