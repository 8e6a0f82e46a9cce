"""Rows that every synthesis request reads (its key with the tenant, the voice it names), kept in each process.

Reading them through the ORM cost about 1.5 ms of a request's first audio, mostly building the SQL. A lookup
here answers from this process's memory while two things hold: the shared cache (Redis in production) still
holds the generation token it was read under, and it is younger than TTS_LOOKUP_CACHE_SECONDS. Every save or
delete of the rows a kind depends on replaces that kind's token (at once and when its transaction commits), so
a revoked key, a suspended tenant, a changed limit or a deleted voice is seen by the next request of every
process sharing the cache; the embedded mode is one process. Writes that send no signal (queryset.update, SQL
by hand, a management command of the embedded mode, whose cache is its own) are seen within the time limit.

Only the row read is cached: callers still check what can change with time (expiry, the key's secret) on every
request, and a miss (no such row) is never cached."""
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models.signals import post_delete, post_save

logger = logging.getLogger(__name__)
T = TypeVar("T")


class LookupCache(Generic[T]):
    def __init__(self, kind: str, max_entries: int = 10_000):
        self.kind = kind
        self.max_entries = max_entries
        self._token_key = f"lookup-generation:{kind}"
        self._entries: OrderedDict[Hashable, tuple[str, float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T | None]) -> T | None:
        """The row for `key`, from memory when still current, else from `load()` (None: no such row)."""
        lifetime = settings.TTS_LOOKUP_CACHE_SECONDS
        if lifetime <= 0:
            return load()
        token = self._token()  # read before the row: a write after it changes the token and drops this entry
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == token and entry[1] > now:
                self._entries.move_to_end(key)
                return entry[2]
        value = load()
        with self._lock:
            if value is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = (token, now + lifetime, value)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        return value

    def invalidate(self) -> None:
        """Every process's entries of this kind are stale from now on."""
        cache.set(self._token_key, uuid.uuid4().hex, timeout=None)

    def watch(self, *models) -> None:
        """Invalidate after any committed save or delete of these models."""
        def changed(**kwargs):
            # Now, and again once the write commits: a request that read the row between the two, before the
            # commit, cached it under the first new token, which the second replaces.
            self._invalidate_after_write()
            transaction.on_commit(self._invalidate_after_write, using=kwargs.get("using"))

        for model in models:
            post_save.connect(changed, sender=model, weak=False, dispatch_uid=f"lookup-cache-{self.kind}-save-{model.__name__}")
            post_delete.connect(changed, sender=model, weak=False, dispatch_uid=f"lookup-cache-{self.kind}-delete-{model.__name__}")

    def _invalidate_after_write(self) -> None:
        """A write is never undone or failed for its cache (Redis down): other processes then see it within the
        time limit, and this process's requests answer 503 until the cache is back."""
        try:
            self.invalidate()
        except Exception as exc:
            logger.warning("lookup cache %s: could not mark a change (%s); processes see it within %s s",
                           self.kind, exc, settings.TTS_LOOKUP_CACHE_SECONDS)

    def _token(self) -> str:
        token = cache.get(self._token_key)
        if token is None:  # a new or cleared cache: nothing read before can be trusted
            cache.add(self._token_key, uuid.uuid4().hex, timeout=None)
            token = cache.get(self._token_key)
        return token
