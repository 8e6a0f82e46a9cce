"""The work queue between web processes and model workers, and the inboxes their messages arrive in.

Jobs: each job is started by exactly one worker. A worker takes a job only when it has a free slot, and
acknowledges it with its first answer that is not the acceptance (audio, done, error). A job taken by a
worker that died before acknowledging it is claimed by another live worker and runs there.

Inboxes: every web process reads one inbox (the replies to all of its jobs) and every worker one inbox (credit
and cancel for its jobs), each by one long-lived reader that fans the messages out. A send to an inbox that
no longer exists (its reader's process is gone) reports False instead of creating it.

Two implementations of the one interface; `job_queue()` picks the one for the current settings:
  RedisJobQueue   production: a Redis Stream with a consumer group for the jobs (XREADGROUP, XACK, XCLAIM of
                  the pending jobs of dead workers), a Redis Stream per inbox read with XREAD from the last id
                  seen (a read is never cancelled, so nothing Redis handed out is lost; read entries are
                  deleted, and an inbox whose reader stopped refreshing it expires).
  MemoryJobQueue  the embedded mode: the worker runs on the web process's own event loop; asyncio queues.
"""
import asyncio
import itertools
import logging
import uuid
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgpack
from django.conf import settings

logger = logging.getLogger(__name__)

OnMessage = Callable[[dict], None]
# Which of these workers are alive (their heartbeat is fresh).
Alive = Callable[[list[str]], Awaitable[dict[str, bool]]]

# A job given to workers this many times without ever being acknowledged is failed rather than tried again:
# it is likelier to be what kills them than to be unlucky.
MAX_DELIVERIES = 3


@dataclass
class Delivery:
    """A job as a worker received it."""

    entry: str  # the job's id in the queue, for acknowledging it
    job: dict
    deliveries: int = 1  # 1 the first time; more when claimed from a worker that died


class JobQueue(ABC):
    # --- web side -------------------------------------------------------------------------------------------
    @abstractmethod
    async def submit(self, job: dict) -> str:
        """Queue a job for the next worker with room; returns its entry id."""

    @abstractmethod
    async def withdraw(self, entry: str) -> None:
        """Remove a job no worker has taken yet (its client gave up)."""

    # --- worker side ----------------------------------------------------------------------------------------
    @abstractmethod
    async def take(self, consumer: str, timeout: float) -> Delivery | None:
        """The next job for `consumer`, waiting up to `timeout` seconds; call only with a free slot."""

    @abstractmethod
    async def claim_orphans(self, consumer: str, alive: Alive, limit: int) -> list[Delivery]:
        """Up to `limit` jobs that workers which are no longer `alive` took and never acknowledged."""

    @abstractmethod
    async def ack(self, delivery: Delivery) -> None:
        """The job is the worker's for good: it will not be handed to another worker."""

    @abstractmethod
    async def leave(self, consumer: str) -> None:
        """A worker stops for good (after its jobs are done)."""

    # --- inboxes --------------------------------------------------------------------------------------------
    @abstractmethod
    async def open_inbox(self, name: str, on_message: OnMessage) -> None:
        """Start the one reader of inbox `name`; it calls `on_message` on the event loop for each message."""

    @abstractmethod
    async def send(self, inbox: str, message: dict, *, ack: Delivery | None = None) -> bool:
        """Put a message in an inbox; with `ack`, acknowledge that job in the same step. False when the
        inbox's reader is gone."""

    async def ensure_inbox(self, name: str) -> None:
        """Make this process's own inbox `name` exist again if it was lost (Redis restarted empty)."""

    async def close(self) -> None:
        """Stop the readers (the event loop is ending)."""


# --- in process ---------------------------------------------------------------------------------------------
class MemoryJobQueue(JobQueue):
    def __init__(self):
        self._jobs: asyncio.Queue[Delivery] = asyncio.Queue()
        self._withdrawn: set[str] = set()
        self._inboxes: dict[str, OnMessage] = {}
        self._ids = itertools.count(1)

    async def submit(self, job: dict) -> str:
        entry = str(next(self._ids))
        self._jobs.put_nowait(Delivery(entry=entry, job=job))
        return entry

    async def withdraw(self, entry: str) -> None:
        self._withdrawn.add(entry)

    async def take(self, consumer: str, timeout: float) -> Delivery | None:
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                # Cancelling asyncio.Queue.get loses nothing: an item is only removed when get returns it.
                delivery = await asyncio.wait_for(self._jobs.get(), left)
            except asyncio.TimeoutError:
                return None
            if delivery.entry in self._withdrawn:
                self._withdrawn.discard(delivery.entry)
                continue
            return delivery
        return None

    async def claim_orphans(self, consumer, alive, limit) -> list[Delivery]:
        return []  # the embedded worker lives and dies with the web process: nobody is left to serve them

    async def ack(self, delivery: Delivery) -> None:
        pass

    async def leave(self, consumer: str) -> None:
        pass

    async def open_inbox(self, name: str, on_message: OnMessage) -> None:
        self._inboxes[name] = on_message

    async def send(self, inbox: str, message: dict, *, ack: Delivery | None = None) -> bool:
        on_message = self._inboxes.get(inbox)
        if on_message is None:
            return False
        on_message(message)
        return True

    async def close(self) -> None:
        self._inboxes.clear()


# --- Redis --------------------------------------------------------------------------------------------------
_GROUP = "workers"
_FIELD = b"m"
# An inbox whose reader has not refreshed it for this long is gone (its process died).
_INBOX_TTL_MS = 60_000
# How long one blocking read waits before its reader looks around (refreshes its inbox, notices a stop).
_READ_BLOCK_MS = 1000
# How often a worker sweeps dead workers off the consumer group.
_CONSUMER_SWEEP_SECONDS = 60.0


# KEYS: the reply inbox, the job stream; ARGV: the inbox's time to live (ms), the field and the packed job.
_SUBMIT_SCRIPT = """
if redis.call('exists', KEYS[1]) == 0 then redis.call('xadd', KEYS[1], '*', 'open', '1') end
redis.call('pexpire', KEYS[1], ARGV[1])
return redis.call('xadd', KEYS[2], '*', ARGV[2], ARGV[3])
"""


def _pack(message: dict) -> dict:
    return {_FIELD: msgpack.packb(message, use_bin_type=True)}


def _unpack(fields: dict | None) -> dict | None:
    if not fields or _FIELD not in fields:
        return None  # deleted since (a withdrawn job), or an inbox's opening entry
    message = msgpack.unpackb(fields[_FIELD], raw=False)
    return message if isinstance(message, dict) else None


def _no_group(exc: BaseException) -> bool:
    """The job stream or its consumer group is gone: Redis restarted without its data, or was flushed."""
    import redis.exceptions

    return isinstance(exc, redis.exceptions.ResponseError) and "NOGROUP" in str(exc)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisJobQueue(JobQueue):
    def __init__(self, url: str):
        import redis.asyncio as redis

        from callwaiting.redis_client import async_options

        self.redis = redis.Redis.from_url(url, **async_options())
        self.stream = settings.TTS_JOB_QUEUE
        self.prefix = f"{self.stream}:inbox:"
        self._group_ready = False
        self._submit_script = self.redis.register_script(_SUBMIT_SCRIPT)
        self._readers: list[asyncio.Task] = []
        self._closed = False
        self._next_sweep = 0.0

    def _inbox_key(self, name: str) -> str:
        return self.prefix + name

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        import redis.exceptions

        try:
            # From id 0: jobs queued before any worker ever started are served too (stale ones are dropped by
            # their accept_by).
            await self.redis.xgroup_create(self.stream, _GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # --- jobs -----------------------------------------------------------------------------------------------
    async def submit(self, job: dict) -> str:
        await self._ensure_group()
        if not job.get("reply_to"):
            return _text(await self.redis.xadd(self.stream, _pack(job)))
        # One atomic step: the inbox the answers go to exists (again) before any worker can take the job. After
        # Redis restarted empty it would otherwise be missing until its reader's next round, the job's answers
        # would be refused, and the client would wait TTS_JOB_ACCEPT_TIMEOUT for nothing.
        entry = await self._submit_script(
            keys=[self._inbox_key(job["reply_to"]), self.stream], args=[_INBOX_TTL_MS, _FIELD, _pack(job)[_FIELD]],
        )
        return _text(entry)

    async def withdraw(self, entry: str) -> None:
        # Not yet read: it never will be. Already read (pending): the worker has it; its first answer reaches
        # a web process that no longer knows the job, which tells it to stop (dispatch.ReplyRouter.deliver).
        await self.redis.xdel(self.stream, entry)

    async def take(self, consumer: str, timeout: float) -> Delivery | None:
        import redis.exceptions

        await self._ensure_group()
        try:
            answer = await self.redis.xreadgroup(
                _GROUP, consumer, {self.stream: ">"}, count=1, block=max(1, int(timeout * 1000)),
            )
        except redis.exceptions.ResponseError as exc:
            if not _no_group(exc):
                raise
            self._group_ready = False  # the stream was deleted (FLUSHDB, a restart): made again next time
            return None
        for _stream, entries in answer or ():
            for entry, fields in entries:
                job = _unpack(fields)
                if job is None:
                    await self.redis.xack(self.stream, _GROUP, entry)
                    continue
                return Delivery(entry=_text(entry), job=job)
        return None

    async def claim_orphans(self, consumer, alive, limit) -> list[Delivery]:
        await self._ensure_group()
        try:
            return await self._claim_orphans(consumer, alive, limit)
        except Exception as exc:
            if not _no_group(exc):
                raise
            self._group_ready = False  # nothing is pending in a group that is gone; made again next time
            return []

    async def _claim_orphans(self, consumer, alive, limit) -> list[Delivery]:
        idle_ms = int(settings.TTS_WORKER_DEAD_AFTER * 1000)
        pending = await self.redis.xpending_range(self.stream, _GROUP, "-", "+", 100, idle=idle_ms)
        owners = {_text(item["consumer"]) for item in pending} - {consumer}
        if not owners:
            await self._sweep_consumers(alive)
            return []
        living = await alive(sorted(owners))
        claimed = []
        for item in pending:
            if len(claimed) >= limit:
                break
            owner = _text(item["consumer"])
            if owner == consumer or living.get(owner, False):
                continue
            # XCLAIM with a minimum idle time is atomic: of several workers claiming the same job, one gets it.
            for entry, fields in await self.redis.xclaim(self.stream, _GROUP, consumer, idle_ms, [item["message_id"]]):
                job = _unpack(fields)
                if job is None:  # withdrawn meanwhile
                    await self.redis.xack(self.stream, _GROUP, entry)
                    continue
                claimed.append(Delivery(entry=_text(entry), job=job, deliveries=item["times_delivered"] + 1))
        return claimed

    async def _sweep_consumers(self, alive) -> None:
        """Dead workers with nothing left pending leave the group (each worker process has its own name)."""
        now = asyncio.get_running_loop().time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + _CONSUMER_SWEEP_SECONDS
        consumers = await self.redis.xinfo_consumers(self.stream, _GROUP)
        idle = [_text(c["name"]) for c in consumers
                if not c["pending"] and c["idle"] > _CONSUMER_SWEEP_SECONDS * 1000]
        living = await alive(idle) if idle else {}
        for name in idle:
            if not living.get(name, False):
                await self.redis.xgroup_delconsumer(self.stream, _GROUP, name)

    async def ack(self, delivery: Delivery) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            # A group that is gone (Redis restarted empty) has nothing left to acknowledge.
            await pipe.xack(self.stream, _GROUP, delivery.entry).xdel(self.stream, delivery.entry).execute(
                raise_on_error=False
            )

    async def leave(self, consumer: str) -> None:
        try:
            pending = await self.redis.xpending_range(self.stream, _GROUP, "-", "+", 1, consumername=consumer)
            if not pending:
                await self.redis.xgroup_delconsumer(self.stream, _GROUP, consumer)
        except Exception as exc:
            if not _no_group(exc):
                raise

    # --- inboxes --------------------------------------------------------------------------------------------
    async def open_inbox(self, name: str, on_message: OnMessage) -> None:
        key = self._inbox_key(name)
        # An opening entry makes the stream exist, so that senders (which never create an inbox) can reach it.
        last_id = _text(await self.redis.xadd(key, {b"open": b"1"}))
        await self.redis.pexpire(key, _INBOX_TTL_MS)
        self._readers.append(asyncio.create_task(self._read_inbox(key, last_id, on_message)))

    async def ensure_inbox(self, name: str) -> None:
        key = self._inbox_key(name)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.pexpire(key, _INBOX_TTL_MS)
            exists, _ = await pipe.execute()
        if not exists:
            async with self.redis.pipeline(transaction=True) as pipe:
                await pipe.xadd(key, {b"open": b"1"}).pexpire(key, _INBOX_TTL_MS).execute()

    async def _read_inbox(self, key: str, last_id: str, on_message: OnMessage) -> None:
        """The inbox's one reader. Each round trip refreshes the inbox's expiry, deletes what the previous one
        read, and waits for more after the last id seen; a Redis outage is retried from that same id."""
        read: list[str] = [last_id]
        failing = False
        while not self._closed:
            try:
                if failing:  # Redis is back, maybe empty: the inbox exists again before the next blocking read
                    await self.ensure_inbox(key[len(self.prefix):])
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.pexpire(key, _INBOX_TTL_MS)
                    if read:
                        pipe.xdel(key, *read)
                    pipe.xread({key: last_id}, count=500, block=_READ_BLOCK_MS)
                    results = await pipe.execute()
                if not results[0]:  # gone (expired, or Redis restarted empty) while unrefreshed: open it again
                    await self.redis.xadd(key, {b"open": b"1"})
                    await self.redis.pexpire(key, _INBOX_TTL_MS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closed:  # redis-py turns a cancelled read into a connection error
                    return
                # Redis is down: log it once per outage, not twice a second; retried from the same id.
                if not failing:
                    logger.warning("reading inbox %s failed (%s); retrying until Redis answers", key, exc)
                failing = True
                await asyncio.sleep(0.25)
                continue
            if failing:
                logger.warning("reading inbox %s again", key)
                failing = False
            read = []
            for _stream, entries in results[-1] or ():
                for entry, fields in entries:
                    last_id = _text(entry)
                    read.append(last_id)
                    message = _unpack(fields)
                    if message is not None:
                        try:
                            on_message(message)
                        except Exception:
                            logger.exception("inbox %s: a message could not be handled", key)

    async def send(self, inbox: str, message: dict, *, ack: Delivery | None = None) -> bool:
        key = self._inbox_key(inbox)
        if ack is None:
            return await self.redis.xadd(key, _pack(message), nomkstream=True) is not None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, _pack(message), nomkstream=True)
            pipe.xack(self.stream, _GROUP, ack.entry).xdel(self.stream, ack.entry)
            # The message counts; an acknowledgement refused because the group is gone (Redis restarted
            # empty) had nothing left to acknowledge.
            results = await pipe.execute(raise_on_error=False)
        if isinstance(results[0], Exception):
            raise results[0]
        return results[0] is not None

    async def close(self) -> None:
        self._closed = True
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers.clear()
        await self.redis.aclose()


# --- one per event loop -------------------------------------------------------------------------------------
_queues: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, JobQueue]" = weakref.WeakKeyDictionary()


def uses_redis() -> bool:
    """Redis when model workers are separate processes; in process when the worker is embedded (or when no
    Redis is configured, where a web process without a worker can only answer that none is available)."""
    return bool(settings.REDIS_URL) and not settings.TTS_EMBEDDED_WORKER


def job_queue() -> JobQueue:
    """The queue of the running event loop (Redis clients and asyncio queues belong to one loop)."""
    loop = asyncio.get_running_loop()
    queue = _queues.get(loop)
    if queue is None:
        queue = RedisJobQueue(settings.REDIS_URL) if uses_redis() else MemoryJobQueue()
        _queues[loop] = queue
    return queue


def new_inbox_name(kind: str) -> str:
    return f"{kind}:{uuid.uuid4().hex}"


def worker_inbox(worker_id: str) -> str:
    """Where a worker reads credit and cancel for its jobs."""
    return f"worker:{worker_id}"
