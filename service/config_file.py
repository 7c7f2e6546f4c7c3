"""The optional config file (MG_CONFIG=path/to/mg.yaml). Environment variables override it.

    settings:              any MG_* setting, by its lower-case name without MG_
      http_port: 8080
      max_duration_s: 300
    providers:             per provider: base_url, and the key as api_key_env (the variable that holds
      openai:              it) or api_key (only if the file itself is kept secret), and the keys
        api_key_env: OPENAI_API_KEY       its declaration adds (file_settings: azure's deployments)
        base_url: https://api.openai.com/v1
      studio:              a provider of one of the TYPES, defined here: any name that is not a
        type: openai-compatible   built-in provider's, a base_url (required) and optionally a key;
        base_url: http://10.0.0.5:9000/v1   its models are added under models: with provider: studio
        api_key_env: STUDIO_KEY
                           and, for any provider, how many calls it gets at once and its circuit
                           breaker (LIMIT_KEYS, ProviderLimits below), and several keys instead of
                           one (`keys:`, KeyEntry below: service/providers/credentials.py)
    aliases:               extra names for models; a list is a route: its targets tried in order
      fast: bytedance/seedream-4.0              (service/generation/routing.py)
      hero: [openai/gpt-image-1, google/gemini-2.5-flash-image]
    models:                catalog entries to add, or to override key by key (format: service/catalog)
      openai/gpt-image-1:
        price: {default: "0.15"}

Every mistake is reported as `file:line: what is wrong`, by `mg config check` and by `mg serve`,
which refuses to start rather than fail later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SECTIONS = ("settings", "providers", "aliases", "models")
# What any provider entry may hold; a provider the file defines also has its `type`.
BUILT_IN_KEYS = ("api_key", "api_key_env", "base_url")
PROVIDER_KEYS = (*BUILT_IN_KEYS, "type")
# What any provider entry may add about the calls it is sent (service/generation/capacity.py).
LIMIT_KEYS = ("max_in_flight", "max_queued", "max_queue_wait_s", "breaker_failures", "breaker_cooldown_s")
# The kinds of provider a config file can define by itself (service/providers/registry.py builds them).
TYPES = ("openai-compatible",)


class ConfigFileError(ValueError):
    """A config file problem, already phrased as `path:line: message`."""


@dataclass(frozen=True)
class ProviderLimits:
    """How the gateway paces the calls to one provider (each worker and replica together, through
    the store), and when it stops calling it for a while."""

    max_in_flight: int = 0  # calls sent at once; 0: no limit
    max_queued: int = 100  # calls a worker lets wait for one of them; past it: no capacity
    max_queue_wait_s: float = 10.0  # the longest one waits (and never past its deadline)
    breaker_failures: int = 0  # consecutive failures that open its circuit; 0: no breaker
    breaker_cooldown_s: float = 30.0  # how long it stays open before one probe goes through


@dataclass(frozen=True)
class KeyEntry:
    """One of a provider's several credentials (`providers.<name>.keys:`): its key (or the variable
    holding it), its share of the calls, its own endpoint (an Azure region) and concurrency limit."""

    api_key: str = ""
    api_key_env: str = ""
    weight: int = 1
    base_url: str = ""
    max_in_flight: int = 0


KEY_ENTRY_KEYS = ("api_key", "api_key_env", "weight", "base_url", "max_in_flight")


def _keys(config: ConfigFile, name: str, entries: Any) -> tuple[KeyEntry, ...]:
    where = ("providers", name, "keys")
    if not isinstance(entries, list) or not entries:
        raise config.error(where, f"provider {name!r}: keys must list one or more keys")
    keys = []
    for index, entry in enumerate(entries):
        at = (*where, str(index))
        if not isinstance(entry, dict) or set(entry) - set(KEY_ENTRY_KEYS):
            raise config.error(at, f"a key of {name!r} is a mapping of {', '.join(KEY_ENTRY_KEYS)}")
        if ("api_key" in entry) == ("api_key_env" in entry):
            raise config.error(at, f"a key of {name!r} needs one of api_key and api_key_env")
        for field_name in ("weight", "max_in_flight"):
            value = entry.get(field_name, 1 if field_name == "weight" else 0)
            smallest = 1 if field_name == "weight" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
                raise config.error(
                    (*at, field_name), f"{field_name} must be a whole number >= {smallest}, not {value!r}"
                )
        keys.append(
            KeyEntry(
                api_key=str(entry.get("api_key", "")),
                api_key_env=str(entry.get("api_key_env", "")),
                weight=entry.get("weight", 1),
                base_url=str(entry.get("base_url", "")),
                max_in_flight=entry.get("max_in_flight", 0),
            )
        )
    return tuple(keys)


def _limits(config: ConfigFile, name: str, entry: dict[str, Any]) -> ProviderLimits:
    values: dict[str, Any] = {}
    for key in LIMIT_KEYS:
        if key not in entry:
            continue
        value, kind = entry[key], type(getattr(ProviderLimits(), key))
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not (whole or (kind is float and isinstance(value, float))) or value < 0:
            raise config.error(("providers", name, key), f"{key} must be a number >= 0, not {value!r}")
        values[key] = kind(value)
    limits = ProviderLimits(**values)
    if limits.max_in_flight == 0 and {"max_queued", "max_queue_wait_s"} & set(values):
        raise config.error(("providers", name), f"provider {name!r}: a queue needs max_in_flight")
    return limits


@dataclass(frozen=True)
class ConfigFile:
    path: Path
    settings: dict[str, Any] = field(default_factory=dict)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)
    aliases: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)
    limits: dict[str, ProviderLimits] = field(default_factory=dict)
    keys: dict[str, tuple[KeyEntry, ...]] = field(default_factory=dict)

    def error(self, where: tuple[str, ...], message: str) -> ConfigFileError:
        """An error pointing at the line of `where` (or of its nearest parent that has one)."""
        for depth in range(len(where), -1, -1):
            if where[:depth] in self.lines:
                return ConfigFileError(f"{self.path}:{self.lines[where[:depth]]}: {message}")
        return ConfigFileError(f"{self.path}: {message}")


def _line_map(node: yaml.Node, path: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            lines[child] = key.start_mark.line + 1
            _line_map(value, child, lines)
    elif isinstance(node, yaml.SequenceNode):  # (a route's targets, a provider's keys)
        for index, item in enumerate(node.value):
            lines[(*path, str(index))] = item.start_mark.line + 1
            _line_map(item, (*path, str(index)), lines)


def read_config_file(path: Path) -> ConfigFile:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigFileError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    lines: dict[tuple[str, ...], int] = {}
    if root is not None:
        _line_map(root, (), lines)
    config = ConfigFile(path, lines=lines)
    if document is None:
        return config
    if not isinstance(document, dict):
        raise config.error((), "the config file must be a mapping of sections")
    for section, value in document.items():
        if section not in SECTIONS:
            raise config.error((section,), f"unknown section {section!r}; sections are {', '.join(SECTIONS)}")
        if not isinstance(value, dict):
            raise config.error((section,), f"{section} must be a mapping")
    providers = document.get("providers") or {}
    limits: dict[str, ProviderLimits] = {}
    keys: dict[str, tuple[KeyEntry, ...]] = {}
    for name, entry in providers.items():
        if not isinstance(entry, dict):
            raise config.error(("providers", name), f"provider {name!r} must be a mapping")
        limits[name] = _limits(config, name, entry)
        for key in LIMIT_KEYS:
            entry.pop(key, None)
        if "keys" in entry:
            if "api_key" in entry or "api_key_env" in entry:
                raise config.error(("providers", name), f"provider {name!r}: give keys or one key, not both")
            keys[name] = _keys(config, name, entry.pop("keys"))
        # A built-in provider's keys beyond PROVIDER_KEYS are checked against its declaration
        # (config.py); a provider the file defines has no declaration, so only PROVIDER_KEYS.
        if "type" in entry and set(entry) - set(PROVIDER_KEYS):
            raise config.error(
                ("providers", name), f"provider {name!r} takes only {', '.join(PROVIDER_KEYS)}"
            )
        if "type" in entry and entry["type"] not in TYPES:
            raise config.error(
                ("providers", name, "type"),
                f"unknown provider type {entry['type']!r}; types: {', '.join(TYPES)}",
            )
        if "type" in entry and not entry.get("base_url"):
            raise config.error(
                ("providers", name), f"provider {name!r} of type {entry['type']} needs a base_url"
            )
    aliases = document.get("aliases") or {}
    for alias, target in aliases.items():
        if isinstance(target, list):
            if not target:
                raise config.error(("aliases", alias), f"route {alias!r} lists no targets")
            for index, item in enumerate(target):
                if not isinstance(item, str):
                    raise config.error(
                        ("aliases", alias, str(index)), f"route {alias!r}: a target names a model"
                    )
            aliases[alias] = tuple(target)
        elif not isinstance(target, str):
            raise config.error(
                ("aliases", alias), f"alias {alias!r} must name a model, or list models (a route)"
            )
    return ConfigFile(
        path,
        settings=dict(document.get("settings") or {}),
        providers={
            name: {k: str(v) if k in PROVIDER_KEYS else v for k, v in entry.items()}
            for name, entry in providers.items()
        },
        aliases=dict(aliases),
        models=dict(document.get("models") or {}),
        lines=lines,
        limits=limits,
        keys=keys,
    )


def defined_providers(config: ConfigFile) -> dict[str, str]:
    """name -> type of the providers the file defines itself (those with a `type`)."""
    return {name: entry["type"] for name, entry in config.providers.items() if "type" in entry}


def provider_values(config: ConfigFile, environ: Mapping[str, str], name: str) -> tuple[str, str]:
    """(api key, base URL) the file gives a provider; empty where it gives none. With several keys,
    the first one that is set."""
    entry = config.providers.get(name, {})
    key = entry.get("api_key") or (environ.get(entry["api_key_env"], "") if "api_key_env" in entry else "")
    resolved = provider_keys(config, environ, name)
    return (resolved[0][1] if resolved and not key else key), entry.get("base_url", "")


def provider_keys(
    config: ConfigFile, environ: Mapping[str, str], name: str
) -> list[tuple[KeyEntry, str, str]]:
    """(entry, key, label) of each of a provider's several keys that is set: its label is the
    variable's name, or `key N` for one written in the file (never the key itself)."""
    resolved = []
    for index, entry in enumerate(config.keys.get(name, ())):
        key = entry.api_key or environ.get(entry.api_key_env, "")
        if key:
            resolved.append((entry, key, entry.api_key_env or f"key {index + 1}"))
    return resolved
