"""The `mg` command.

mg serve [--no-envoy]                 the gateway (gRPC workers + Envoy)
mg envoy-config --out DIR             the edge config, for running Envoy apart
mg projects create|list|show|update   projects: spend cap, model allowlist, requests per minute
mg projects archive|unarchive NAME    stop (or restore) a project's keys; its ledger is kept
mg keys create|list|revoke            API keys (`create` prints the new key alone on stdout)
mg usage [--project P] [--since 24h]  spend and images per model, from the ledger
mg ledger [--project P] [--model M]   the latest ledger entries
mg audit                              the latest admin changes (through the admin API or mg)
mg migrate                            bring the store's schema to this version's
mg store copy --to postgresql://...   copy the store into a new PostgreSQL database, verified
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from service import admin, store_commands
from service.admin_token import configured_admin_token, dev_admin_token_path, ensure_dev_admin_token
from service.catalog.catalog import CatalogError, catalog_for, usd
from service.config import Settings, SettingsError, load_settings, provider_declarations
from service.config_file import ConfigFileError, defined_providers, read_config_file
from service.data_dir import make_private, private_dir, write_private
from service.errors import Unavailable
from service.hosting.blobs import open_blob_store
from service.providers.registry import setup_hint
from service.runtime.edge import render_config, render_lua
from service.runtime.envoy_admin import AdminSocketError, admin_socket_path
from service.runtime.observability import configure_logging
from service.runtime.supervisor import serve
from service.stores import SQLITE_FILE, open_store
from service.stores.base import Project, Store
from service.stores.periods import describe, iso

T = TypeVar("T")
DEV_KEY_FILE = "dev-api-key"
# The response goes to a file; on success its first image is saved, on an error envelope (curl's
# --fail-with-body exits non-zero) the envelope is printed, never a Python traceback.
SAVE_FIRST_IMAGE = (
    "python3 -c 'import base64,json; "
    'data = json.load(open("response.json"))["data"]; '
    'open("image.png","wb").write(base64.b64decode(data[0]["b64_json"])); '
    'print("saved image.png")\' || cat response.json'
)


def _with_store(
    settings: Settings, operation: Callable[[Store], Awaitable[T]], *, reads_only: bool = False
) -> T:
    """Run `operation` on the gateway's store. A command that only reads never creates a store: an
    empty one would show nothing, as if the gateway had no projects, when the data dir is wrong."""
    if not settings.redis_url and not settings.postgres_url:
        path = settings.data_dir.resolve() / SQLITE_FILE
        if reads_only and not path.exists():
            raise admin.AdminError(
                f"no store at {path}: set MG_DATA_DIR (or the config file's data_dir) to the gateway's"
            )
        print(f"mg: store {path}", file=sys.stderr)

    async def run() -> T:
        store = open_store(settings)
        try:
            return await operation(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def _when(timestamp: float | None) -> str:
    return "" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print(payload: Any, as_json: bool, table: Callable[[], str]) -> None:
    print(json.dumps(payload, indent=2) if as_json else table())


# --- serve


def _mg_command() -> str:
    """How to run `mg` from anywhere: the script installed beside this interpreter, by its path."""
    beside = Path(sys.executable).parent / "mg"
    return str(beside) if beside.exists() else "mg"


def _admin_line(settings: Settings, base: str, dev_admin_token: str | None) -> str:
    if dev_admin_token is not None:
        return f"  Admin API:                {base}/v1/admin  (admin token: {dev_admin_token})\n"
    if configured_admin_token(settings) is not None:
        return f"  Admin API:                {base}/v1/admin  (with the configured admin token)\n"
    return "  Admin API:                off (set MG_ADMIN_TOKEN to turn it on)\n"


def _console_line(settings: Settings, base: str) -> str:
    if not settings.console:
        return "  Console:                  off (MG_CONSOLE=false)\n"
    if configured_admin_token(settings) is None:
        return (
            f"  Console:                  {base}/console  (signing in needs an admin token: MG_ADMIN_TOKEN)\n"
        )
    return f"  Console:                  {base}/console  (sign in with the admin token)\n"


def _print_ready(
    settings: Settings, key: str | None, project: Project | None, dev_admin_token: str | None = None
) -> None:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host
    base = f"http://{host}:{settings.http_port}"
    mg = _mg_command()
    shown = key or f"<create one: {mg} keys create --project NAME>"
    project_line = ""
    if key is not None and project is not None:
        cap = "no spend cap" if project.budget_micros is None else f"spend cap {usd(project.budget_micros)}"
        if project.budget_period:
            cap += f" for {describe(project.budget_period)}"
        change = f"{mg} projects update {project.name} --budget-usd N"
        project_line = f"  Project:                  {project.name} ({cap}; change it: {change})\n"
    admin_line = _admin_line(settings, base, dev_admin_token) + _console_line(settings, base)
    print(
        f"""
mg is ready
  REST (OpenAI-compatible): {base}/v1
  gRPC:                     {settings.grpc_host}:{settings.grpc_port}  (mg.v1.ImageGeneration)
  API key:                  {shown}
{project_line}{admin_line}  Admin:                    {mg} projects list | keys list | usage

Try it:
  curl -s --fail-with-body -o response.json {base}/v1/images/generations \\
    -H "Authorization: Bearer {shown}" -H "Content-Type: application/json" \\
    -d '{{"model": "local/sketch", "prompt": "a lighthouse at dusk", "size": "512x512"}}' \\
    && {SAVE_FIRST_IMAGE}
""",
        flush=True,
    )


def check_config(settings: Settings) -> str:
    """A one-line summary of a valid configuration; raises ConfigFileError (with the file's line
    where it can point at one) or CatalogError otherwise."""
    try:
        catalog = catalog_for(settings)
    except CatalogError as exc:
        if settings.config_file and exc.where:
            raise read_config_file(Path(settings.config_file)).error(exc.where, str(exc)) from None
        raise
    if settings.config_file:
        config = read_config_file(Path(settings.config_file))
        providers = {spec.name for spec in provider_declarations()} | set(defined_providers(config))
        for model in catalog:
            if model.id in config.models and model.provider not in providers:
                raise config.error(
                    ("models", model.id), f"{model.id}: no provider is named {model.provider!r}"
                )
    source = settings.config_file or "environment only"
    return f"ok ({source}): {len(list(catalog))} models; {describe_providers(settings)}"


def describe_providers(settings: Settings) -> str:
    """Which declared providers are configured, and what turns on each of the others; then the
    providers the config file defines (`name (type)`)."""
    configured, missing = [], []
    for spec in provider_declarations():
        if spec.name in settings.providers:
            configured.append(spec.name)
        else:
            missing.append(f"{spec.name} ({setup_hint(spec.name)})")
    configured += [f"{name} ({config.type})" for name, config in settings.providers.items() if config.type]
    return f"providers configured: {', '.join(configured)}; not configured: {', '.join(missing) or 'none'}"


def _cmd_config_check(settings: Settings, args: argparse.Namespace) -> int:
    print(check_config(settings))
    return 0


def _cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    # What the gateway and its children (workers, Envoy) create is private to this user from its
    # first byte, files 0600 and directories 0700, whichever code creates it (Envoy's log, the
    # workers' metric files): the data dir holds images, the store and secrets.
    os.umask(0o077)
    # The dev key is kept in the data dir (mode 0600) so restarts can print it again; the store, as
    # always, holds only its hash.
    key_file = settings.data_dir / DEV_KEY_FILE
    saved = key_file.read_text().strip() if key_file.exists() else None
    found = _with_store(settings, lambda store: admin.dev_key(store, saved))
    key, project = found if found is not None else (None, None)
    first_start = False
    if key is not None and key != saved:
        first_start = True
        write_private(private_dir(key_file.parent) / key_file.name, (key + "\n").encode())
    # The dev setup's admin token: made with the dev project on the first start of a gateway on the
    # embedded store, kept (0600) in the data dir and used again on later starts, unless an admin
    # token is configured. Replicas (a shared store) each have a data dir of their own: a token one
    # of them made would open the admin API on that replica only, so they take a configured one.
    dev_admin_token = None
    configured = settings.admin_token or settings.admin_token_sha256
    embedded = not settings.redis_url and not settings.postgres_url
    if not configured and ((first_start and embedded) or dev_admin_token_path(settings.data_dir).is_file()):
        dev_admin_token = ensure_dev_admin_token(settings.data_dir)
    return serve(
        settings, lambda s: _print_ready(s, key, project, dev_admin_token), with_envoy=not args.no_envoy
    )


def _cmd_envoy_config(settings: Settings, args: argparse.Namespace) -> int:
    """Write envoy.yaml + errors.lua for running Envoy apart from `mg serve` (docker-compose)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lua = out / "errors.lua"
    lua.write_text(render_lua())
    (out / "envoy.yaml").write_text(render_config(settings, Path(args.lua_path or lua.resolve())))
    # Envoy binds its admin socket there, in a directory it does not create.
    private_dir(admin_socket_path(settings).parent)
    print(out / "envoy.yaml")
    return 0


# --- projects


PERIOD_HELP = (
    "when the cap renews: day, week (ISO, from Monday), month (calendar months; all UTC) or a rolling "
    "Nd such as 30d, counted from now (default: never, a lifetime cap)"
)


def _project_dict(project: Any, spend: Any | None = None) -> dict[str, Any]:
    data = asdict(project)
    data["allow"] = list(project.allow)
    data["budget_usd"] = None if project.budget_micros is None else project.budget_micros / 1_000_000
    if spend is not None:
        # Of a cap that renews: in the period in force, which started and renews at these times.
        data["spent_usd"] = spend.spent_micros / 1_000_000
        data["reserved_usd"] = spend.reserved_micros / 1_000_000
        data["period_start"] = iso(spend.period_start) if project.budget_period else None
        data["renews_at"] = iso(spend.renews_at) if project.budget_period else None
    return data


def _warn_about_unmatched(settings: Settings, patterns: Sequence[str] | None) -> None:
    """An allowlist pattern no catalog model matches is most likely a typo ('openai/gpt-image1')."""
    catalog = list(catalog_for(settings))
    for pattern in patterns or ():
        if not any(fnmatchcase(model.id, pattern) for model in catalog):
            print(
                f"warning: --allow {pattern!r} matches no model in the catalog (see GET /v1/models)",
                file=sys.stderr,
            )


def _cmd_projects(settings: Settings, args: argparse.Namespace) -> int:
    if args.action in ("create", "update"):
        _warn_about_unmatched(settings, args.allow)

    async def run(store: Store) -> int:
        if args.action == "create":
            project = await admin.create_project(
                store,
                args.name,
                args.budget_usd,
                args.allow,
                args.rpm,
                actor=admin.cli_actor(),
                period=args.budget_period or "",
            )
            print(project.name)
            return 0
        if args.action == "update":
            await admin.update_project(
                store,
                args.name,
                budget_usd=args.budget_usd,
                no_budget=args.no_budget,
                allow=args.allow,
                allow_all=args.allow_all,
                rpm=args.rpm,
                period=args.budget_period,
                actor=admin.cli_actor(),
            )
            print(args.name)
            return 0
        if args.action in ("archive", "unarchive"):
            change = admin.archive_project if args.action == "archive" else admin.unarchive_project
            await change(store, args.name, actor=admin.cli_actor())
            print(args.name)
            return 0
        rows = [
            (row.project, row.spend)
            for row in await admin.projects_with_spend(store, args.name if args.action == "show" else None)
            if args.action == "show" or args.all or row.project.archived_at is None
        ]
        data = [_project_dict(p, s) for p, s in rows]
        _print(
            data if args.action == "list" else data[0],
            args.json,
            lambda: _table(
                ["name", "id", "budget", "period", "spent", "reserved", "renews", "rpm", "allow", "archived"],
                [
                    (
                        p.name,
                        p.id,
                        "none" if p.budget_micros is None else usd(p.budget_micros),
                        p.budget_period or "lifetime",
                        usd(s.spent_micros),
                        usd(s.reserved_micros),
                        iso(s.renews_at) if p.budget_period else "never",
                        p.rpm or f"default ({settings.default_rpm})",
                        ", ".join(p.allow) or "*",
                        _when(p.archived_at),
                    )
                    for p, s in rows
                ],
            ),
        )
        return 0

    return _with_store(settings, run, reads_only=args.action in ("list", "show"))


# --- keys


def _cmd_keys(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        if args.action == "create":
            token, _ = await admin.create_key(store, args.project, actor=admin.cli_actor())
            print(token)  # alone on stdout, so scripts can capture it
            return 0
        if args.action == "revoke":
            print((await admin.revoke_key(store, args.key, actor=admin.cli_actor())).key.id)
            return 0
        rows = await admin.list_keys(store, args.project)
        data = [
            {k: v for k, v in asdict(row.key).items() if k != "key_hash"} | {"project": row.project}
            for row in rows
        ]
        _print(
            data,
            args.json,
            lambda: _table(
                ["id", "prefix", "project", "created", "revoked"],
                [
                    (
                        row.key.id,
                        row.key.prefix + "...",
                        row.project,
                        _when(row.key.created_at),
                        _when(row.key.revoked_at),
                    )
                    for row in rows
                ],
            ),
        )
        return 0

    return _with_store(settings, run, reads_only=args.action == "list")


# --- files


def _cmd_files_sweep(settings: Settings, args: argparse.Namespace) -> int:
    """Delete hosted image files older than --older-than (default: MG_FILE_RETENTION_S), now."""
    now = time.time()  # one clock reading: '--older-than 0s' is 0 s, not a hair below it
    age_s = now - admin.parse_since(args.older_than, now) if args.older_than else settings.file_retention_s
    interactive = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        end = "" if interactive and done < total else "\n"
        print(f"\rchecked {done}/{total} files", end=end, file=sys.stderr, flush=True)

    async def run() -> int:
        return await open_blob_store(settings).delete_older_than(time.time() - age_s, progress)

    removed = asyncio.run(run())
    print(f"deleted {removed} files older than {age_s:g} s")
    return 0


# --- usage


def _cmd_usage(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        since = admin.parse_since(args.since) if args.since else None
        rows = await admin.usage(store, args.project, since, by_day=args.by_day)
        data = [
            {k: v for k, v in asdict(r).items() if k != "day" or args.by_day}
            | {"cost_usd": r.cost_micros / 1e6}
            for r in rows
        ]
        days = ["day"] if args.by_day else []
        _print(
            data,
            args.json,
            lambda: _table(
                [*days, "project", "model", "requests", "failed", "images", "spend", "input tokens"],
                [
                    (
                        *([r.day] if days else []),
                        r.project,
                        r.model,
                        r.requests,
                        r.failed,
                        r.images,
                        usd(r.cost_micros),
                        r.input_tokens,
                    )
                    for r in rows
                ]
                + [(*([""] if days else []), "total", "", *_totals(rows))],
            ),
        )
        return 0

    return _with_store(settings, run, reads_only=True)


# --- ledger and audit


def _cmd_ledger(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        rows, _ = await admin.ledger_page(
            store,
            project=args.project or "",
            model=args.model or "",
            outcome=args.outcome or "",
            since=args.since or "",
            until=args.until or "",
            size=args.limit,
        )
        data = [asdict(r.entry) | {"project": r.project} for r in rows]
        _print(
            data,
            args.json,
            lambda: _table(
                ["time", "request", "project", "model", "outcome", "images", "cost"],
                [
                    (
                        _when(r.entry.created_at),
                        r.entry.request_id,
                        r.project,
                        r.entry.model,
                        r.entry.outcome,
                        r.entry.images_returned,
                        usd(r.entry.cost_micros),
                    )
                    for r in rows
                ],
            ),
        )
        return 0

    return _with_store(settings, run, reads_only=True)


def _cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    async def run(store: Store) -> int:
        entries, _ = await admin.audit_page(store, args.limit)
        _print(
            [asdict(e) for e in entries],
            args.json,
            lambda: _table(
                ["time", "actor", "action", "target", "detail"],
                [
                    (
                        _when(e.at),
                        e.actor,
                        e.action,
                        e.target,
                        " ".join(f"{k}={v}" for k, v in e.detail.items()),
                    )
                    for e in entries
                ],
            ),
        )
        return 0

    return _with_store(settings, run, reads_only=True)


def _totals(rows: list[admin.UsageRow]) -> tuple[object, ...]:
    return (
        sum(r.requests for r in rows),
        sum(r.failed for r in rows),
        sum(r.images for r in rows),
        usd(sum(r.cost_micros for r in rows)),
        sum(r.input_tokens for r in rows),
    )


# --- argument parsing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mg", description="mg image-generation gateway")
    parser.add_argument("--version", action="version", version=f"mg {version('mg-gateway')}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser(
        "serve", help="run the gateway (gRPC workers + Envoy) on MG_* settings"
    )
    serve_parser.add_argument("--no-envoy", action="store_true", help="run only the gRPC workers")

    envoy = commands.add_parser("envoy-config", help="write the Envoy config for these settings")
    envoy.add_argument("--out", required=True, help="directory for envoy.yaml and errors.lua")
    envoy.add_argument("--lua-path", help="where Envoy will find errors.lua (default: in --out)")

    projects = commands.add_parser("projects", help="manage projects").add_subparsers(
        dest="action", required=True
    )
    create = projects.add_parser("create", help="create a project")
    create.add_argument("name")
    create.add_argument("--budget-usd", help="hard spend cap in USD (default: none)")
    create.add_argument("--budget-period", help=PERIOD_HELP)
    create.add_argument("--allow", action="append", default=[], metavar="PATTERN", help="allowed model glob")
    create.add_argument("--rpm", type=int, help="requests per minute per key")
    for action in ("list", "show"):
        listing = projects.add_parser(action, help=f"{action} project(s) with spend")
        if action == "show":
            listing.add_argument("name")
        else:
            listing.add_argument("--all", action="store_true", help="archived projects too")
        listing.add_argument("--json", action="store_true")
    update = projects.add_parser("update", help="change a project's cap, allowlist or rpm")
    update.add_argument("name")
    update.add_argument("--budget-usd")
    update.add_argument("--no-budget", action="store_true", help="remove the spend cap (and its period)")
    update.add_argument("--budget-period", help=PERIOD_HELP + "; none: a lifetime cap again")
    update.add_argument("--allow", action="append", metavar="PATTERN", help="replace the allowlist")
    update.add_argument("--allow-all", action="store_true", help="clear the allowlist")
    update.add_argument("--rpm", type=int)
    archive = projects.add_parser("archive", help="archive a project: its keys stop working at once")
    archive.add_argument("name")
    unarchive = projects.add_parser("unarchive", help="restore an archived project and its keys")
    unarchive.add_argument("name")

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(dest="action", required=True)
    key_create = keys.add_parser("create", help="create a key; prints it alone on stdout")
    key_create.add_argument("--project", required=True)
    key_list = keys.add_parser("list", help="list keys (never the keys themselves)")
    key_list.add_argument("--project")
    key_list.add_argument("--json", action="store_true")
    key_revoke = keys.add_parser("revoke", help="revoke a key: its id, the key itself, or its listed prefix")
    key_revoke.add_argument(
        "key", help="key id (key_...), the key (mg_live_...), or the prefix keys list shows"
    )

    config = commands.add_parser("config", help="the configuration").add_subparsers(
        dest="action", required=True
    )
    config.add_parser("check", help="validate settings, the config file (MG_CONFIG) and the catalog")

    files = commands.add_parser("files", help="hosted image files").add_subparsers(
        dest="action", required=True
    )
    sweep = files.add_parser("sweep", help="delete files past the retention now (with progress)")
    sweep.add_argument("--older-than", help="e.g. 24h, 7d (default: MG_FILE_RETENTION_S)")

    commands.add_parser(
        "migrate", help="bring the store's schema (PostgreSQL or SQLite) to this mg's version"
    )
    store = commands.add_parser("store", help="the store itself").add_subparsers(dest="action", required=True)
    copy = store.add_parser("copy", help="copy this store into a new PostgreSQL database, verified")
    copy.add_argument(
        "--to", required=True, metavar="POSTGRESQL_URL", help="an empty database (migrated first)"
    )

    ledger = commands.add_parser("ledger", help="the latest ledger entries, newest first")
    for option in ("--project", "--model", "--outcome"):
        ledger.add_argument(option)
    ledger.add_argument("--since", help="e.g. 24h, 7d, 2026-11-01")
    ledger.add_argument("--until", help="e.g. 1h, 2026-11-02")
    ledger.add_argument("--limit", type=int, default=admin.DEFAULT_PAGE_SIZE, help="entries (1-500)")
    ledger.add_argument("--json", action="store_true")

    audit = commands.add_parser("audit", help="the latest admin changes (API and mg), newest first")
    audit.add_argument("--limit", type=int, default=admin.DEFAULT_PAGE_SIZE, help="entries (1-500)")
    audit.add_argument("--json", action="store_true")

    usage = commands.add_parser("usage", help="spend and images per model from the ledger")
    usage.add_argument("--project")
    usage.add_argument("--since", help="e.g. 24h, 7d, 2026-11-01")
    usage.add_argument("--by-day", action="store_true", help="one row per project, model and UTC day")
    usage.add_argument("--json", action="store_true")
    return parser


HANDLERS: dict[str, Callable[[Settings, argparse.Namespace], int]] = {
    "serve": _cmd_serve,
    "envoy-config": _cmd_envoy_config,
    "projects": _cmd_projects,
    "keys": _cmd_keys,
    "usage": _cmd_usage,
    "ledger": _cmd_ledger,
    "audit": _cmd_audit,
    "config": _cmd_config_check,
    "files": _cmd_files_sweep,
    "migrate": store_commands.cmd_migrate,
    "store": store_commands.cmd_store_copy,
}


# Commands that read or write nothing in the data dir.
WITHOUT_DATA_DIR = frozenset({"envoy-config", "config", "migrate"})


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        if args.command == "serve":
            check_config(settings)
    except (SettingsError, ConfigFileError, CatalogError) as exc:
        print(f"mg: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command not in WITHOUT_DATA_DIR:
        make_private(settings.data_dir)  # one an older version left readable by others
    try:
        return HANDLERS[args.command](settings, args)
    except (admin.AdminError, AdminSocketError) as exc:
        print(f"mg: {exc}", file=sys.stderr)
        return 1
    except Unavailable as exc:  # the store: unreachable, or a schema to migrate first
        print(f"mg: {exc.message}", file=sys.stderr)
        return 1
    except (ConfigFileError, CatalogError) as exc:
        print(f"mg: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
