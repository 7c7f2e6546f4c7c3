"""The shared store: Redis, for any number of gateway replicas.

Every operation that must be atomic is one Lua script, and scripts read the clock from Redis
(`TIME`), so replicas with skewed clocks still agree on rate limits, reservation leases and the
boundaries of budget periods (the period in force is derived in the script that checks the cap).
A period's spend is a key of its own, which expires 35 days after the period ends.
Keys live under a prefix (MG_REDIS_PREFIX) so several gateways can share one Redis.

Durability: the ledger and spend are only as durable as Redis is configured to be. Run Redis with
AOF (`appendonly yes`; `appendfsync everysec` loses at most about a second of writes on a crash of
the Redis host, `always` loses none) — docker-compose.yml does. Without persistence a Redis restart
forgets spend, so caps would start again from zero.

If Redis cannot be reached, operations raise `Unavailable` (503); the client reconnects by itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, fields
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.errors import Unavailable
from service.stores.base import (
    ApiKey,
    AuditEntry,
    Claim,
    HeldReservation,
    IdempotencyRecord,
    IdempotencyState,
    InFlight,
    LedgerEntry,
    LedgerPage,
    LedgerQuery,
    Project,
    ProjectExists,
    RateDecision,
    ReservationHolder,
    Spend,
    UnknownProject,
    UsageQuery,
    UsageTally,
    UsageTotal,
)
from service.stores.periods import BudgetPeriod, period_end

T = TypeVar("T")
# How long a period's spend is kept past its end: far past the last reservation of it that could
# settle (a charge is retried for an hour at most), long enough to be read back for a month's report.
PERIOD_KEEP_S = 35 * 86_400
# A project's reserved totals are made again from its reservations every this many operations.
TOTALS_REBUILD_EVERY = 1000
# Ledger entries read back at once while a filtered page is gathered.
LEDGER_CHUNK = 500
_STREAM_ID = re.compile(r"\d+-\d+")

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1000000 "

# KEYS: names hash, project hash. ARGV: name, id, then field/value pairs.
CREATE_PROJECT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
return 1
"""

# KEYS: a hash. ARGV: field, value. Sets the field only on a hash that exists; 1 if it did.
SET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: bucket. ARGV: limit. Same arithmetic as stores/gcra.py.
RATE_LIMIT = (
    _NOW
    + """
local limit = tonumber(ARGV[1])
local interval = 60 / limit
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local start = math.max(tat, now)
local new_tat = start + interval
if new_tat - now > 60 + 1e-9 then
  return {0, 0, tostring(start - now), tostring(new_tat - now - 60)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, math.floor((60 - (new_tat - now)) / interval + 1e-9), tostring(new_tat - now), '0'}
"""
)

# Spend operations read the clock the caller passes (ARGV[1], tests only) or, when it is '' (every
# deployment), Redis's TIME: one clock for every replica, read inside the script that checks the cap.
_CLOCK = """
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME') now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# Budget periods (stores/periods.py's arithmetic): the start of the period holding `now`, and its end.
# A month's start is found from the day of the month (H. Hinnant's days-to-civil).
_PERIODS = (
    f"local PERIOD_KEEP_S = {PERIOD_KEEP_S}\n"
    + """
local function period_start(kind, days, anchor, now)
  local t = math.floor(now)
  if kind == 'rolling' then
    local length = days * 86400
    return anchor + math.floor((t - anchor) / length) * length
  end
  local day = math.floor(t / 86400)
  if kind == 'day' then return day * 86400 end
  if kind == 'week' then return (day - (day + 3) % 7) * 86400 end
  local doe = (day + 719468) % 146097
  local yoe = math.floor(
    (doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local mday = doy - math.floor((153 * mp + 2) / 5) + 1
  return (day - mday + 1) * 86400
end
local function period_end(kind, days, start)
  if kind == 'rolling' then return start + days * 86400 end
  if kind == 'day' then return start + 86400 end
  if kind == 'week' then return start + 7 * 86400 end
  return period_start('month', 0, 0, start + 31 * 86400)
end
-- The period in force for the period ARGV (kind, days, anchor): {its name 'anchor:start', start, end}.
local function period_in_force(at)
  local kind, days, anchor = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local start = period_start(kind, days, anchor, now)
  return string.format('%d:%d', anchor, start), start, period_end(kind, days, start)
end
-- A period's spend is a key of its own (KEYS[6]..':'..name) that expires PERIOD_KEEP_S past its end
-- (by the clock the script reads: a TTL, not a time, so that a test clock holds too).
local function charge_period(name, ends, cost)
  local key = KEYS[6] .. ':' .. name
  redis.call('INCRBY', key, cost)
  redis.call('EXPIRE', key, math.max(1, math.ceil(ends + PERIOD_KEEP_S - now)))
end
"""
)

# Reservations: zset id -> lease expiry, hash id -> amount, hash id -> holder, hash id -> the period
# it was taken in ('anchor:start/end', periodic caps only), and hash period -> the amounts held in it
# ('' for reservations under a lifetime cap): a cap check reads one field, where adding up every
# reservation cost ~5 ms of Redis's one thread with 10,000 of a project's generations in flight.
# The totals go when nothing is held, and are made again from the reservations when missing and
# every TOTALS_REBUILD_EVERY operations on the project (its field '#' counts them): so they heal
# from anything that changed the reservations without them (an older mg on the same Redis), at a
# cost shared by that many operations. Expired leases are dropped first.
_HELD_TOTALS = (
    f"local TOTALS_REBUILD_EVERY = {TOTALS_REBUILD_EVERY}\n"
    + """
-- (amounts go to HINCRBY as the text they are stored as: a Lua number is passed as '%.14g' text,
-- which Redis refuses as an integer from 1e14 on)
local function take_off(id)
  local amount = redis.call('HGET', KEYS[3], id)
  if amount and amount ~= '0' then
    redis.call('HINCRBY', KEYS[7], redis.call('HGET', KEYS[5], id) or '', '-' .. amount)
  end
end
local function forget(id)
  take_off(id)
  redis.call('HDEL', KEYS[3], id) redis.call('HDEL', KEYS[4], id) redis.call('HDEL', KEYS[5], id)
end
local function totals_kept()
  if redis.call('HLEN', KEYS[3]) == 0 then redis.call('DEL', KEYS[7]) return end
  local operations = redis.call('HINCRBY', KEYS[7], '#', 1)
  if operations % TOTALS_REBUILD_EVERY ~= 1 then return end
  redis.call('DEL', KEYS[7])
  redis.call('HSET', KEYS[7], '#', operations)
  local amounts = redis.call('HGETALL', KEYS[3])
  for i = 1, #amounts, 2 do
    redis.call('HINCRBY', KEYS[7], redis.call('HGET', KEYS[5], amounts[i]) or '', amounts[i + 1])
  end
end
"""
)
_DROP_EXPIRED = (
    _HELD_TOTALS
    + """
totals_kept()
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do forget(id) end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
local spent, reserved = 0, 0
-- Of a lifetime cap: everything spent, and the reservations not taken in a period.
local function count_lifetime()
  spent = tonumber(redis.call('GET', KEYS[1]) or '0')
  reserved = tonumber(redis.call('HGET', KEYS[7], '') or '0')
end
"""
)

# Of a periodic cap (ARGV at `at`: kind, days, anchor, carry): the period in force (name_period),
# and what it spent, with the carry in its first period (the one holding the anchor), and holds.
_IN_PERIOD = """
local taken_in, period_start_s, ends = '', 0, 0
local function name_period(at)
  local name
  name, period_start_s, ends = period_in_force(at)
  taken_in = name .. '/' .. ends
  return name
end
local function count_period(at)
  local name = name_period(at)
  spent = tonumber(redis.call('GET', KEYS[6] .. ':' .. name) or '0')
  if period_start_s <= tonumber(ARGV[at + 2]) then spent = spent + tonumber(ARGV[at + 3]) end
  reserved = tonumber(redis.call('HGET', KEYS[7], taken_in) or '0')
end
"""

_SPEND_PRELUDE = _CLOCK + _PERIODS + _DROP_EXPIRED + _IN_PERIOD

# KEYS: the spend keys (_spend_keys). ARGV: now, id, amount, cap ('' = none), lease seconds, holder
# JSON (what the reservation is for: the list of generations in flight), then the period (7..10).
RESERVE = (
    _SPEND_PRELUDE
    + """
local capped = ARGV[4] ~= ''
if ARGV[7] ~= '' then
  if capped then count_period(7) else name_period(7) end
elseif capped then
  count_lifetime()
end
local amount = tonumber(ARGV[3])
if capped and spent + reserved + amount > tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[2], ARGV[6])
if taken_in ~= '' then redis.call('HSET', KEYS[5], ARGV[2], taken_in) end
redis.call('HINCRBY', KEYS[7], taken_in, ARGV[3])
return 1
"""
)

# KEYS: reservation zsets. ARGV: now, lease seconds, the ids. A lapsed lease is not renewed (its
# budget may already be given to another request).
RENEW_RESERVATIONS = (
    _CLOCK
    + """
local renewed = {}
for i, key in ipairs(KEYS) do
  local id = ARGV[i + 2]
  if tonumber(redis.call('ZSCORE', key, id) or '0') > now then
    redis.call('ZADD', key, 'XX', now + tonumber(ARGV[2]), id)
    renewed[#renewed + 1] = id
  end
end
return renewed
"""
)

# KEYS: the spend keys. ARGV: now, then the period (2..5). Returns {spent, reserved, period start}.
SPEND = (
    _SPEND_PRELUDE
    + """
if ARGV[2] ~= '' then count_period(2) else count_lifetime() end
return {tostring(spent), tostring(reserved), tostring(period_start_s)}
"""
)

# KEYS: the spend keys, then the ledger stream (8). ARGV: now, id, cost, entry JSON ('' = none), then the
# period in force (5..7, kind '' = lifetime). The cost joins the lifetime total and the period the
# reservation was taken in; one that lapsed before this (gone from the amounts) joins the period in
# force now.
SETTLE = (
    _CLOCK
    + _PERIODS
    + _HELD_TOTALS
    + """
totals_kept()
local taken_in = redis.call('HGET', KEYS[5], ARGV[2])
local held = redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1
redis.call('ZREM', KEYS[2], ARGV[2])
forget(ARGV[2])
if redis.call('HLEN', KEYS[3]) == 0 then redis.call('DEL', KEYS[7]) end
local cost = tonumber(ARGV[3])
if cost ~= 0 then
  redis.call('INCRBY', KEYS[1], cost)
  if taken_in then
    local name, ends = string.match(taken_in, '^(.*)/(%d+)$')
    charge_period(name, tonumber(ends), cost)
  elseif not held and ARGV[5] ~= '' then
    local name, _, ends = period_in_force(5)
    charge_period(name, ends, cost)
  end
end
if ARGV[4] ~= '' then redis.call('XADD', KEYS[8], '*', 'entry', ARGV[4]) end
return 1
"""
)

# Upstream slots: a key per slot, holding its holder, that expires with its lease. KEYS: the pool's
# slot keys. ARGV: holder, lease ms. Returns the slot taken, or -1.
ACQUIRE_SLOT = """
for slot, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'PX', ARGV[2], 'NX') then return slot - 1 end
end
return -1
"""

# KEYS: the slot's key. ARGV: holder. Only its holder frees a slot.
RELEASE_SLOT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Idempotency record: a hash that expires with its lease, retention or failure linger (PEXPIRE).
# KEYS: record. ARGV: fingerprint, owner, lease seconds, waiting_for.
# Returns {1} when claimed, else {0, fingerprint, state, owner, lease, error}.
CLAIM = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'fingerprint', 'state', 'owner', 'lease', 'error')
if h[2] then
  local blocks = true
  if h[2] == 'in_flight' then blocks = tonumber(h[4]) > now
  elseif h[2] == 'failed' then blocks = h[3] == ARGV[4] end
  if blocks then return {0, h[1], h[2], h[3], h[4], h[5]} end
end
redis.call('DEL', KEYS[1])
local lease = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'state', 'in_flight', 'owner', ARGV[2],
           'lease', tostring(now + lease), 'error', '', 'response', '')
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return {1}
"""
)

# KEYS: record. ARGV: owner, lease seconds.
RENEW = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'state') ~= 'in_flight' then
  return 0
end
local lease = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'lease', tostring(now + lease))
if redis.call('PTTL', KEYS[1]) < lease * 1000 then redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000)) end
return 1
"""
)

# KEYS: record. ARGV: owner, state, response (bytes), error, keep seconds.
FINISH = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'response', ARGV[3], 'error', ARGV[4], 'lease', '0')
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5]) * 1000))
return 1
"""

_PROJECT_FIELDS = [f.name for f in fields(Project)]
_KEY_FIELDS = [f.name for f in fields(ApiKey)]


def _encode(value: Any) -> str:
    return json.dumps(value)


def _project_from(raw: dict[str, str]) -> Project:
    values = {k: json.loads(v) for k, v in raw.items()}
    values["allow"] = tuple(values["allow"])
    return Project(**values)


def _key_from(raw: dict[str, str]) -> ApiKey:
    return ApiKey(**{k: json.loads(v) for k, v in raw.items()})


class RedisStore:
    def __init__(self, url: str, prefix: str = "mg:", clock: Callable[[], float] | None = None) -> None:
        """`clock`: for tests only, the time spend operations use instead of Redis's TIME."""
        self._clock = clock
        # Typed as Any: redis-py's stubs type every reply as bytes | str whatever decode_responses says.
        self._redis: Any = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=5, decode_responses=True
        )
        self._prefix = prefix
        self._create_project = self._redis.register_script(CREATE_PROJECT)
        self._set_if_exists = self._redis.register_script(SET_IF_EXISTS)
        self._rate_limit = self._redis.register_script(RATE_LIMIT)
        self._reserve = self._redis.register_script(RESERVE)
        self._renew_reservations = self._redis.register_script(RENEW_RESERVATIONS)
        self._spend = self._redis.register_script(SPEND)
        self._settle = self._redis.register_script(SETTLE)
        self._claim = self._redis.register_script(CLAIM)
        self._renew = self._redis.register_script(RENEW)
        self._finish_record = self._redis.register_script(FINISH)
        self._acquire_slot = self._redis.register_script(ACQUIRE_SLOT)
        self._release_slot = self._redis.register_script(RELEASE_SLOT)
        # Stored responses are binary; this client returns bytes.
        self._raw: Any = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)

    def _k(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    def _spend_keys(self, project_id: str) -> list[str]:
        return [
            self._k("spent", project_id),
            self._k("resv", project_id),
            self._k("resv-amount", project_id),
            self._k("resv-holder", project_id),
            self._k("resv-period", project_id),
            self._k("period-spent", project_id),  # the scripts add ':anchor:start'
            self._k("resv-total", project_id),
        ]

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        try:
            return await operation()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise Unavailable(f"The Redis store is unavailable: {exc}") from exc

    # --- projects

    async def create_project(self, project: Project) -> None:
        pairs = [item for name in _PROJECT_FIELDS for item in (name, _encode(_plain(getattr(project, name))))]
        created = await self._call(
            lambda: self._create_project(
                keys=[self._k("project-names"), self._k("project", project.id)],
                args=[project.name, project.id, *pairs],
            )
        )
        if not created:
            raise ProjectExists(project.name)

    async def get_project(self, name: str) -> Project | None:
        project_id = await self._call(lambda: self._redis.hget(self._k("project-names"), name))
        return None if project_id is None else await self.get_project_by_id(project_id)

    async def get_project_by_id(self, project_id: str) -> Project | None:
        raw = await self._call(lambda: self._redis.hgetall(self._k("project", project_id)))
        return _project_from(raw) if raw else None

    async def list_projects(self) -> list[Project]:
        ids = await self._call(lambda: self._redis.hvals(self._k("project-names")))
        projects = [await self.get_project_by_id(i) for i in ids]
        return sorted((p for p in projects if p is not None), key=lambda p: p.name)

    async def update_project(self, project: Project) -> None:
        key = self._k("project", project.id)
        if not await self._call(lambda: self._redis.exists(key)):
            raise UnknownProject(project.name)
        mapping = {
            name: _encode(_plain(getattr(project, name)))
            for name in (
                "budget_micros",
                "allow",
                "rpm",
                "budget_period",
                "budget_anchor",
                "budget_carry_micros",
            )
        }
        await self._call(lambda: self._redis.hset(key, mapping=mapping))

    async def set_project_archived(self, project_id: str, archived_at: float | None) -> bool:
        key = self._k("project", project_id)
        return bool(
            await self._call(
                lambda: self._set_if_exists(keys=[key], args=["archived_at", _encode(archived_at)])
            )
        )

    # --- keys

    async def create_key(self, key: ApiKey) -> None:
        mapping = {name: _encode(getattr(key, name)) for name in _KEY_FIELDS}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("key", key.key_hash), mapping=mapping)
            pipe.hset(self._k("key-ids"), key.id, key.key_hash)
            await self._call(pipe.execute)

    async def find_key(self, key_hash: str) -> ApiKey | None:
        raw = await self._call(lambda: self._redis.hgetall(self._k("key", key_hash)))
        return _key_from(raw) if raw else None

    async def list_keys(self, project_id: str | None = None) -> list[ApiKey]:
        hashes = await self._call(lambda: self._redis.hvals(self._k("key-ids")))
        keys = [await self.find_key(h) for h in hashes]
        found = [k for k in keys if k is not None and (project_id is None or k.project_id == project_id)]
        return sorted(found, key=lambda k: k.created_at)

    async def revoke_key(self, key_id: str, at: float) -> bool:
        key_hash = await self._call(lambda: self._redis.hget(self._k("key-ids"), key_id))
        if key_hash is None:
            return False
        key = await self.find_key(key_hash)
        if key is None or key.revoked_at is not None:
            return False
        await self._call(lambda: self._redis.hset(self._k("key", key.key_hash), "revoked_at", _encode(at)))
        return True

    # --- rate limiting

    async def hit_rate_limit(self, bucket: str, limit: int) -> RateDecision:
        allowed, remaining, reset, retry = await self._call(
            lambda: self._rate_limit(keys=[self._k("rl", bucket)], args=[limit])
        )
        return RateDecision(bool(allowed), limit, int(remaining), float(reset), float(retry))

    # --- spend

    async def reserve(
        self,
        project_id: str,
        reservation_id: str,
        amount_micros: int,
        cap_micros: int | None,
        lease_s: float,
        holder: ReservationHolder | None = None,
        period: BudgetPeriod | None = None,
    ) -> bool:
        args: list[str | int | float] = [
            self._now(),
            reservation_id,
            amount_micros,
            "" if cap_micros is None else cap_micros,
            lease_s,
            json.dumps(asdict(holder or ReservationHolder("", "", 0.0))),
            *_period_args(period),
        ]
        keys = self._spend_keys(project_id)
        return bool(await self._call(lambda: self._reserve(keys=keys, args=args)))

    async def renew_reservations(self, held: Sequence[HeldReservation], lease_s: float) -> set[str]:
        if not held:
            return set()
        keys = [self._k("resv", one.project_id) for one in held]
        args: list[str | float] = [self._now(), lease_s, *(one.reservation_id for one in held)]
        renewed = await self._call(lambda: self._renew_reservations(keys=keys, args=args))
        return {str(reservation_id) for reservation_id in renewed}

    async def settle(
        self, reservation_id: str, entry: LedgerEntry, period: BudgetPeriod | None = None
    ) -> None:
        await self._finish(reservation_id, entry.project_id, entry.cost_micros, entry, period)

    async def release(self, reservation_id: str, project_id: str, entry: LedgerEntry | None) -> None:
        await self._finish(reservation_id, project_id, 0, entry, None)

    async def _finish(
        self,
        reservation_id: str,
        project_id: str,
        cost: int,
        entry: LedgerEntry | None,
        period: BudgetPeriod | None,
    ) -> None:
        keys = [*self._spend_keys(project_id), self._k("ledger")]
        args: list[str | int] = [
            self._now(),
            reservation_id,
            cost,
            "" if entry is None else json.dumps(asdict(entry)),
            *_period_args(period)[:3],
        ]
        await self._call(lambda: self._settle(keys=keys, args=args))

    async def spend(self, project_id: str, period: BudgetPeriod | None = None) -> Spend:
        args = [self._now(), *_period_args(period)]
        spent, reserved, start = await self._call(
            lambda: self._spend(keys=self._spend_keys(project_id), args=args)
        )
        if period is None:
            return Spend(int(float(spent)), int(float(reserved)))
        begun = int(float(start))
        return Spend(int(float(spent)), int(float(reserved)), begun, period_end(period, begun))

    async def in_flight(self) -> list[InFlight]:
        if self._clock is not None:
            now = self._clock()
        else:
            seconds, micros = await self._call(self._redis.time)
            now = seconds + micros / 1_000_000  # the clock the leases were set by
        found = []
        for project_id in await self._call(lambda: self._redis.hvals(self._k("project-names"))):
            found += await self._project_in_flight(project_id, now)
        return sorted(found, key=lambda g: (g.started_at, g.reservation_id))

    async def _project_in_flight(self, project_id: str, now: float) -> list[InFlight]:
        _, zset, amounts, *_ = self._spend_keys(project_id)
        live = await self._call(lambda: self._redis.zrangebyscore(zset, f"({now}", "+inf", withscores=True))
        if not live:
            return []
        ids = [reservation_id for reservation_id, _ in live]
        held = await self._call(lambda: self._redis.hmget(amounts, ids))
        holders = await self._call(lambda: self._redis.hmget(self._k("resv-holder", project_id), ids))
        found = []
        for (reservation_id, expires), amount, holder in zip(live, held, holders, strict=True):
            if amount is None:  # settled between the two reads
                continue
            who = ReservationHolder(**json.loads(holder)) if holder else ReservationHolder("", "", 0.0)
            found.append(
                InFlight(reservation_id, project_id, int(float(amount)), float(expires), **asdict(who))
            )
        return found

    # --- ledger

    async def ledger(self, project_id: str | None = None, since: float | None = None) -> list[LedgerEntry]:
        start = "-" if since is None else str(int(since * 1000))
        rows = await self._call(lambda: self._redis.xrange(self._k("ledger"), min=start))
        entries = [LedgerEntry(**json.loads(fields_["entry"])) for _, fields_ in rows]
        return [e for e in entries if project_id is None or e.project_id == project_id]

    async def ledger_page(self, query: LedgerQuery) -> LedgerPage:
        """Newest first, read back from the stream in chunks and filtered here; the cursor is the
        stream id of the last entry returned."""
        if query.cursor and not _STREAM_ID.fullmatch(query.cursor):
            raise ValueError(query.cursor)
        newest = f"({query.cursor}" if query.cursor else "+"
        # Stream ids are Redis's clock at the write, entries' times the gateway's: `since` bounds the
        # read a minute early, and each entry is checked by its own time.
        oldest = "-" if query.since is None else _stream_time(query.since - 60)
        matched: list[tuple[str, LedgerEntry]] = []
        while len(matched) <= query.limit:
            read = functools.partial(
                self._redis.xrevrange, self._k("ledger"), max=newest, min=oldest, count=LEDGER_CHUNK
            )
            chunk = await self._call(read)
            for stream_id, values in chunk:
                entry = LedgerEntry(**json.loads(values["entry"]))
                if _matches(entry, query):
                    matched.append((stream_id, entry))
            if len(chunk) < LEDGER_CHUNK:
                break
            newest = f"({chunk[-1][0]}"
        page = matched[: query.limit]
        more = len(matched) > query.limit
        return LedgerPage([entry for _, entry in page], page[-1][0] if more else "")

    async def usage(self, query: UsageQuery) -> list[UsageTotal]:
        """Totalled here, over the stream read back from `since` on: Redis cannot aggregate a
        stream, so this reads every entry in the range (a large ledger belongs in PostgreSQL)."""
        oldest = "-" if query.since is None else _stream_time(query.since - 60)
        tally = UsageTally(query)
        while True:
            chunk = await self._call(
                functools.partial(self._redis.xrange, self._k("ledger"), min=oldest, count=LEDGER_CHUNK)
            )
            tally.add(LedgerEntry(**json.loads(values["entry"])) for _, values in chunk)
            if len(chunk) < LEDGER_CHUNK:
                return tally.totals()
            oldest = f"({chunk[-1][0]}"

    async def ledger_batch(self, after: str, limit: int) -> LedgerPage:
        if after and not _STREAM_ID.fullmatch(after):
            raise ValueError(after)
        chunk = await self._call(
            functools.partial(
                self._redis.xrange, self._k("ledger"), min=f"({after}" if after else "-", count=limit
            )
        )
        return LedgerPage(
            [LedgerEntry(**json.loads(values["entry"])) for _, values in chunk], chunk[-1][0] if chunk else ""
        )

    # --- audit

    async def append_audit(self, entry: AuditEntry) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("audit-entries"), entry.id, json.dumps(asdict(entry)))
            pipe.zadd(self._k("audit"), {entry.id: 0})  # one score: ordered by id (time)
            await self._call(pipe.execute)

    async def audit_log(self, limit: int, before: str = "") -> list[AuditEntry]:
        newest = f"({before}" if before else "+"
        ids = await self._call(
            lambda: self._redis.zrevrangebylex(self._k("audit"), newest, "-", start=0, num=limit)
        )
        if not ids:
            return []
        rows = await self._call(lambda: self._redis.hmget(self._k("audit-entries"), ids))
        return [AuditEntry(**json.loads(row)) for row in rows if row is not None]

    # --- idempotency

    def _record_key(self, project_id: str, key: str) -> str:
        # The key is caller-chosen text: hash it into a fixed-size, delimiter-free name.
        return self._k("idem", project_id, hashlib.sha256(key.encode()).hexdigest())

    async def claim_idempotency(
        self, project_id: str, key: str, fingerprint: str, owner: str, lease_s: float, waiting_for: str = ""
    ) -> Claim:
        name = self._record_key(project_id, key)
        reply = await self._call(
            lambda: self._claim(keys=[name], args=[fingerprint, owner, lease_s, waiting_for])
        )
        if reply[0] == 1:
            return Claim(True)
        _, fingerprint_, state, owner_, lease, error = reply
        response = b""
        if state == IdempotencyState.SUCCEEDED:
            # A finished record never changes, so reading its response separately is safe.
            response = await self._call(lambda: self._raw.hget(name, "response")) or b""
        return Claim(False, IdempotencyRecord(fingerprint_, state, owner_, float(lease), response, error))

    async def renew_idempotency(self, project_id: str, key: str, owner: str, lease_s: float) -> bool:
        name = self._record_key(project_id, key)
        return bool(await self._call(lambda: self._renew(keys=[name], args=[owner, lease_s])))

    async def finish_idempotency(
        self, project_id: str, key: str, owner: str, record: IdempotencyRecord, keep_s: float
    ) -> None:
        name = self._record_key(project_id, key)
        args: list[str | bytes | float] = [owner, record.state, record.response, record.error, keep_s]
        await self._call(lambda: self._finish_record(keys=[name], args=args))

    # --- upstream slots

    def _slot_key(self, pool: str, slot: int) -> str:
        return self._k(f"slot:{pool}:{slot}")

    async def acquire_slot(self, pool: str, holder: str, limit: int, lease_s: float) -> int | None:
        keys = [self._slot_key(pool, slot) for slot in range(limit)]
        args: list[str | int] = [holder, max(1, round(lease_s * 1000))]
        slot = int(await self._call(lambda: self._acquire_slot(keys=keys, args=args)))
        return None if slot < 0 else slot

    async def release_slot(self, pool: str, slot: int, holder: str) -> None:
        keys = [self._slot_key(pool, slot)]
        await self._call(lambda: self._release_slot(keys=keys, args=[holder]))

    async def ping(self) -> None:
        await self._call(self._redis.ping)

    async def close(self) -> None:
        await self._redis.aclose()
        await self._raw.aclose()


def _stream_time(at: float) -> str:
    """The first stream id at or after a time (a range bound)."""
    return str(max(0, int(at * 1000)))


def _matches(entry: LedgerEntry, query: LedgerQuery) -> bool:
    return (
        (query.project_id is None or entry.project_id == query.project_id)
        and (query.model is None or entry.model == query.model)
        and (query.outcome is None or entry.outcome == query.outcome)
        and (query.since is None or entry.created_at >= query.since)
        and (query.until is None or entry.created_at < query.until)
    )


def _period_args(period: BudgetPeriod | None) -> list[str | int]:
    """A period as the scripts take it: kind ('' for a lifetime cap), days, anchor, carry."""
    if period is None:
        return ["", 0, 0, 0]
    return [period.kind, period.days, period.anchor, period.carry_micros]


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
