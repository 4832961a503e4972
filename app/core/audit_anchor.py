"""The audit chain's head, kept outside the audit table, so that removing the newest rows
(or rewriting the chain up to them) shows in verify even to an attacker with the rights
of the database's owner.

An anchor is the newest row's id, hash and key id and when it was seen. Workers publish it
in their housekeeping when the head moved (one indexed query per round otherwise): in
Redis (the copy verify reads), as an INFO line in the log, as the gauges
``swapmeter_audit_head_id`` and ``swapmeter_audit_head_hash52``, and, with
``SWAPMETER_AUDIT_ANCHOR_STORE=true``, as ``anchors/audit-head-<database>.json`` in the
result store. An anchor only moves forward, and only along the chain: when the row it
names no longer carries its hash, or the head fell behind it, it is left where it is
and an error logged, so that verify keeps failing until an operator looks.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from prometheus_client import Gauge
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import audit
from app.core.audit import Anchor
from app.core.errors import NotFound
from app.core.settings import Settings
from app.core.storage import ANCHORS_PREFIX, ResultStore

log = logging.getLogger(__name__)

HEAD_ID = Gauge(
    "swapmeter_audit_head_id",
    "The id of the audit chain's newest anchored row (0: none yet; cluster-wide, aggregate "
    "with max).",
    multiprocess_mode="mostrecent",
)
HEAD_HASH52 = Gauge(
    "swapmeter_audit_head_hash52",
    "The first 52 bits of the anchored row's hash (its first 13 hex digits, as a number): "
    "compare with the log's 'audit head anchored' lines.",
    multiprocess_mode="mostrecent",
)

# Sets the anchor only when it moves forward: two workers anchoring at once never move it
# back. KEYS[1]: the anchor; ARGV[1]: the new id; ARGV[2]: the new anchor (JSON).
_ADVANCE = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, kept = pcall(cjson.decode, current)
  if ok and tonumber(kept['id']) and tonumber(kept['id']) >= tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


def redis_key(name: str) -> str:
    return f"swapmeter:audit:anchor:{name}"


def show(anchor: Anchor | None) -> None:
    HEAD_ID.set(anchor.id if anchor else 0)
    HEAD_HASH52.set(int(anchor.hash[:13], 16) if anchor else 0)


def _same(a: Anchor | None, b: Anchor | None) -> bool:
    return a is not None and b is not None and (a.id, a.hash) == (b.id, b.hash)


@dataclass(frozen=True)
class AnchorPlaces:
    """Where the anchor of one database's chain is kept."""

    redis: Redis
    store: ResultStore | None
    name: str

    @classmethod
    def of(cls, settings: Settings, redis: Redis, store: ResultStore | None) -> AnchorPlaces:
        """Named after the database (from its URL: outside the database's reach), so
        that deployments and test runs sharing a Redis or a bucket keep apart."""
        database = make_url(settings.database_url).database if settings.database_url else None
        name = re.sub(r"[^A-Za-z0-9._-]", "_", database or "swapmeter")[:100]
        return cls(redis, store if settings.audit_anchor_store else None, name)

    @property
    def redis_key(self) -> str:
        return redis_key(self.name)

    @property
    def store_key(self) -> str:
        return f"{ANCHORS_PREFIX}audit-head-{self.name}.json"

    async def newest(self) -> Anchor | None:
        """The newest anchor that can be read (Redis's or the store's); None: none."""
        found: list[Anchor] = []
        try:
            raw = await self.redis.get(self.redis_key)
            if raw:
                found.append(Anchor.from_json(raw))
        except (RedisError, OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("the audit anchor could not be read from Redis: %s", exc)
        if self.store is not None:
            try:
                found.append(Anchor.from_json(await self.store.read(self.store_key)))
            except NotFound:
                pass  # none written yet
            except Exception as exc:  # noqa: BLE001 - missing or unreadable: the other copy
                log.warning("the audit anchor could not be read from the store: %s", exc)
        return max(found, key=lambda a: a.id, default=None)

    async def publish(self, session: AsyncSession, last: Anchor | None) -> Anchor | None:
        """Anchor the chain's head where it is not yet. ``last`` is what this process saw
        the round before: when the head is the same, nothing else is read or written.
        Returns the head seen, for the next round."""
        head = await audit.head(session)
        if head is None or _same(head, last):
            return head
        kept = await self.newest()
        if kept is not None and (
            kept.id > head.id
            or (kept.id == head.id and kept.hash != head.hash)
            or (kept.id < head.id and not await audit.holds(session, kept))
        ):
            log.error(
                "the audit chain no longer holds its anchor (row %d, anchored at %s; head "
                "now row %d): the anchor stays, GET /api/v1/admin/ledger/verify says more",
                kept.id,
                kept.when(),
                head.id,
            )
            show(kept)
            return head
        if _same(kept, head):
            show(kept)
            return head
        await self._write(head)
        show(head)
        log.info("audit head anchored: id=%d hash=%s key_id=%s", head.id, head.hash, head.key_id)
        return head

    async def _write(self, anchor: Anchor) -> None:
        try:
            await self.redis.eval(_ADVANCE, 1, self.redis_key, anchor.id, anchor.to_json())
        except (RedisError, OSError) as exc:
            log.warning("the audit anchor was not kept in Redis: %s", exc)
        if self.store is not None:
            try:
                await self.store.put(self.store_key, anchor.to_json().encode(), "application/json")
            except Exception as exc:  # noqa: BLE001 - Redis and the log still have it
                log.warning("the audit anchor was not kept in the store: %s", exc)


async def refresh_gauges(places: AnchorPlaces) -> None:
    """Show the newest kept anchor in this process's gauges (API processes, on a scrape)."""
    anchor = await places.newest()
    if anchor is not None:
        show(anchor)
