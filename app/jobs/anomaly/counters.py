"""The anomaly counters in Redis: one Lua script per swap reads the tenant's rules, counts
the user's requests per minute, same source face per hour and Tokens per day, and answers
which rule broke (observed, limit), all in one atomic round trip.

Keys (``{t}`` the tenant, ``{u}`` the user's id):

- ``swapmeter:anomaly:rules:{t}``: a hash of the tenant's rules (``v`` its version,
  ``rpm``, ``same``, ``tokens``, ``action``; 0 is off), written after each change is
  committed and whenever a swap finds it missing (after a Redis restart: loaded from the
  database and passed in, a second round trip, that once). A newer version always wins, so
  a stale load cannot overwrite a change.
- ``swapmeter:anomaly:{t}:{u}:rpm``: requests per second of Redis' clock, a hash of at
  most 60 fields: the last 60 seconds, sliding by the second.
- ``swapmeter:anomaly:{t}:{u}:src``: the last hour's source faces, a hash from a
  perceptual hash (16 hex digits) to how many swaps used it in each minute
  (``minute:count,...``, at most 60): the last 60 minutes, sliding by the minute. A face
  within ``max_distance`` bits of a stored one counts with it (a re-encode or a resize
  moves a few bits), across every stored face it is near; it is stored with the nearest.
  At most ``MAX_SOURCES`` faces are kept (the longest unseen goes first).

Counts per second and per minute, not per request: what the script reads and writes for
a user is bounded (60 fields, 256 faces of 60 minutes each) however fast they send, and
so is the time Redis spends on it (``bench/anomaly_check.py``).
- ``swapmeter:anomaly:{t}:{u}:tok:{YYYYMMDD}``: Tokens quoted today (UTC).
- ``swapmeter:anomaly:{t}:{u}:open``: the rules this user broke whose flag is still open:
  not reported again (one review item per user and rule) until the flag is resolved (or
  for a week: the database's one open flag per user and rule backs it up).

A request that breaks a ``freeze`` rule is refused and is not counted; otherwise it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

PREFIX = "swapmeter:anomaly:"
MAX_SOURCES = 256
RULES = ("requests_per_minute", "same_source_per_hour", "tokens_per_day")
WINDOWS = {"requests_per_minute": 60, "same_source_per_hour": 3600, "tokens_per_day": 86400}

# KEYS: rules, rpm, src, tok, open. ARGV: the source's hash (16 hex digits, '' when the
# caller did not compute it), Tokens ('' when not quoted), max distance, the cap on faces;
# then, when the caller loaded the rules from the database: version, rpm, same, tokens,
# action. Answers {'unknown'} (no rules in Redis: load them), {'off'}, {'need', same on,
# tokens on} (a rule needs the hash or the Tokens: ask again with them), or {'checked',
# action, refused, same on, tokens on, then rule, observed, limit for each rule broken}.
_CHECK_LUA = """
local function pop(x)
  x = x - bit.band(bit.rshift(x, 1), 0x55555555)
  x = bit.band(x, 0x33333333) + bit.band(bit.rshift(x, 2), 0x33333333)
  x = bit.band(x + bit.rshift(x, 4), 0x0F0F0F0F)
  x = x + bit.rshift(x, 8)
  x = x + bit.rshift(x, 16)
  return bit.band(x, 0x3F)
end
local r = redis.call('HMGET', KEYS[1], 'v', 'rpm', 'same', 'tokens', 'action')
if ARGV[5] then
  if not r[1] or tonumber(r[1]) < tonumber(ARGV[5]) then
    redis.call('HSET', KEYS[1], 'v', ARGV[5], 'rpm', ARGV[6], 'same', ARGV[7],
      'tokens', ARGV[8], 'action', ARGV[9])
    r = {ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9]}
  end
elseif not r[1] then
  return {'unknown'}
end
local rpm, same, tok = tonumber(r[2]), tonumber(r[3]), tonumber(r[4])
if rpm == 0 and same == 0 and tok == 0 then return {'off'} end
local same_on, tok_on = same > 0 and 1 or 0, tok > 0 and 1 or 0
if (same > 0 and ARGV[1] == '') or (tok > 0 and ARGV[2] == '') then
  return {'need', same_on, tok_on}
end
local t = redis.call('TIME')
local sec = tonumber(t[1])
local minute = math.floor(sec / 60)
local out = {}
local function over(rule, observed, limit)
  if observed > limit and redis.call('HEXISTS', KEYS[5], rule) == 0 then
    out[#out + 1] = {rule, observed, limit}
  end
end
if rpm > 0 then
  local all, n = redis.call('HGETALL', KEYS[2]), 1
  for i = 1, #all, 2 do
    if tonumber(all[i]) <= sec - 60 then
      redis.call('HDEL', KEYS[2], all[i])
    else
      n = n + tonumber(all[i + 1])
    end
  end
  over('requests_per_minute', n, rpm)
end
local near, near_m, near_k, fields, oldest, oldest_m = nil, nil, nil, 0, nil, nil
if same > 0 then
  local hi = tonumber(string.sub(ARGV[1], 1, 8), 16)
  local lo = tonumber(string.sub(ARGV[1], 9, 16), 16)
  local maxd, since = tonumber(ARGV[3]), minute - 60
  local all, count, best = redis.call('HGETALL', KEYS[3]), 0, 65
  for i = 1, #all, 2 do
    local f, v = all[i], all[i + 1]
    local last = tonumber(string.match(v, '(%d+):%d+$'))
    if last <= since then
      redis.call('HDEL', KEYS[3], f)
    else
      fields = fields + 1
      if oldest_m == nil or last < oldest_m then oldest, oldest_m = f, last end
      local d = pop(bit.bxor(tonumber(string.sub(f, 1, 8), 16), hi))
        + pop(bit.bxor(tonumber(string.sub(f, 9, 16), 16), lo))
      if d <= maxd then
        local ms, ks = {}, {}
        for m, k in string.gmatch(v, '(%d+):(%d+)') do
          if tonumber(m) > since then
            ms[#ms + 1] = tonumber(m); ks[#ks + 1] = tonumber(k)
            count = count + tonumber(k)
          end
        end
        if d < best then best, near, near_m, near_k = d, f, ms, ks end
      end
    end
  end
  over('same_source_per_hour', count + 1, same)
end
local spent = 0
if tok > 0 then
  spent = tonumber(redis.call('GET', KEYS[4]) or '0') + tonumber(ARGV[2])
  over('tokens_per_day', spent, tok)
end
local refused = (#out > 0 and r[5] == 'freeze') and 1 or 0
for _, b in ipairs(out) do redis.call('HSET', KEYS[5], b[1], sec) end
if #out > 0 then redis.call('EXPIRE', KEYS[5], 604800) end
if refused == 0 then
  if rpm > 0 then
    redis.call('HINCRBY', KEYS[2], sec, 1)
    redis.call('EXPIRE', KEYS[2], 61)
  end
  if same > 0 then
    if near then
      if near_m[#near_m] == minute then
        near_k[#near_k] = near_k[#near_k] + 1
      else
        near_m[#near_m + 1] = minute; near_k[#near_k + 1] = 1
      end
      local parts = {}
      for i = 1, #near_m do parts[i] = near_m[i] .. ':' .. near_k[i] end
      redis.call('HSET', KEYS[3], near, table.concat(parts, ','))
    else
      if fields >= tonumber(ARGV[4]) then redis.call('HDEL', KEYS[3], oldest) end
      redis.call('HSET', KEYS[3], ARGV[1], minute .. ':1')
    end
    redis.call('EXPIRE', KEYS[3], 3660)
  end
  if tok > 0 then
    redis.call('INCRBY', KEYS[4], ARGV[2])
    redis.call('EXPIRE', KEYS[4], 172800)
  end
end
local reply = {'checked', r[5], refused, same_on, tok_on}
for _, b in ipairs(out) do
  reply[#reply + 1] = b[1]; reply[#reply + 1] = b[2]; reply[#reply + 1] = b[3]
end
return reply
"""
_CHECK_SHA = hashlib.sha1(_CHECK_LUA.encode()).hexdigest()


@dataclass(frozen=True)
class Rules:
    """A tenant's limits as the script reads them (0: off)."""

    version: int
    max_requests_per_minute: int
    max_same_source_per_hour: int
    max_tokens_per_day: int
    action: str

    def args(self) -> list[str | int]:
        return [
            self.version,
            self.max_requests_per_minute,
            self.max_same_source_per_hour,
            self.max_tokens_per_day,
            self.action,
        ]


NO_RULES = Rules(0, 0, 0, 0, "flag")


@dataclass(frozen=True)
class Breach:
    rule: str
    observed: int
    limit: int

    @property
    def window_seconds(self) -> int:
        return WINDOWS[self.rule]


@dataclass(frozen=True)
class Verdict:
    """What the script answered: ``status`` unknown, off, need or checked; whether the
    tenant's rules need the source's hash and the quoted Tokens (need, checked)."""

    status: str
    action: str | None = None
    refused: bool = False
    needs_hash: bool = False
    needs_tokens: bool = False
    breaches: tuple[Breach, ...] = ()


@dataclass(frozen=True)
class UserKeys:
    tenant_id: Any
    user_id: int

    @property
    def base(self) -> str:
        return f"{PREFIX}{self.tenant_id}:{self.user_id}:"

    def all(self, day: str | None = None) -> list[str]:
        """rpm, src, tok (of ``day``, today by default) and open."""
        day = day or datetime.now(UTC).strftime("%Y%m%d")
        return [f"{self.base}rpm", f"{self.base}src", f"{self.base}tok:{day}", f"{self.base}open"]


def rules_key(tenant_id: Any) -> str:
    return f"{PREFIX}rules:{tenant_id}"


def _verdict(reply: list[Any]) -> Verdict:
    status = _text(reply[0])
    if status == "need":
        return Verdict(status, needs_hash=bool(reply[1]), needs_tokens=bool(reply[2]))
    if status != "checked":
        return Verdict(status)
    breaches = tuple(
        Breach(_text(reply[i]), int(reply[i + 1]), int(reply[i + 2]))
        for i in range(5, len(reply), 3)
    )
    return Verdict(
        status, _text(reply[1]), bool(reply[2]), bool(reply[3]), bool(reply[4]), breaches
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def check(
    redis: Redis,
    keys: UserKeys,
    *,
    source_hash: int | None,
    tokens: int | None,
    max_distance: int,
    loaded: Rules | None = None,
) -> Verdict:
    """One run of the script (EVALSHA; EVAL once when Redis lost its script cache)."""
    args = [
        "" if source_hash is None else f"{source_hash:016x}",
        "" if tokens is None else tokens,
        max_distance,
        MAX_SOURCES,
        *(loaded.args() if loaded else []),
    ]
    script_keys = [rules_key(keys.tenant_id), *keys.all()]
    try:
        reply = await redis.evalsha(_CHECK_SHA, len(script_keys), *script_keys, *args)  # type: ignore[misc]
    except NoScriptError:
        reply = await redis.eval(_CHECK_LUA, len(script_keys), *script_keys, *args)  # type: ignore[misc]
    return _verdict(reply)


async def store_rules(redis: Redis, tenant_id: Any, rules: Rules) -> None:
    """The tenant's rules as committed, unless Redis holds a newer version already."""
    await redis.eval(  # type: ignore[misc]
        "local v = redis.call('HGET', KEYS[1], 'v') "
        "if v and tonumber(v) >= tonumber(ARGV[1]) then return 0 end "
        "redis.call('HSET', KEYS[1], 'v', ARGV[1], 'rpm', ARGV[2], 'same', ARGV[3], "
        "'tokens', ARGV[4], 'action', ARGV[5]) return 1",
        1,
        rules_key(tenant_id),
        *rules.args(),
    )


async def forget_breach(redis: Redis, keys: UserKeys, rule: str) -> None:
    """The rule may be reported again for this user (its flag was resolved)."""
    await redis.hdel(keys.all()[3], rule)  # type: ignore[misc]


async def reset_user(redis: Redis, keys: UserKeys) -> None:
    """A fresh start for the user (unfrozen by a review): every window and open mark."""
    await redis.delete(*keys.all())
