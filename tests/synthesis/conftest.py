import threading

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command

from synthesis.engines.espeak import EspeakEngine
from tests.asgi import AsgiClient
from tests.factories import TenantFactory, issue_key


@pytest.fixture
def live_voices(transactional_db):
    """Committed rows: the ASGI handler reaches the database from its own threads, as under daphne."""
    call_command("sync_voices", verbosity=0, stdout=open("/dev/null", "w"))


@pytest.fixture
def asgi(live_voices):
    """An ASGI client for a new tenant with every scope, and `asgi.run(coro)` to drive it from a sync test."""
    tenant = TenantFactory()
    client = AsgiClient(key=issue_key(tenant))
    client.tenant = tenant
    client.run = lambda coroutine_function, *args, **kwargs: async_to_sync(coroutine_function)(*args, **kwargs)
    return client


class EngineTap:
    """Wraps the eSpeak engine: records every chunk it emits, and can hold it after the first chunk."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.held = threading.Event()
        self.stopped_early = False
        self.finished = threading.Event()

    def hold_after_first_chunk(self):
        self.gate.clear()

    def release(self):
        self.gate.set()

    @property
    def pcm(self) -> bytes:
        return b"".join(self.chunks)


@pytest.fixture
def engine_tap(monkeypatch):
    tap = EngineTap()
    original = EspeakEngine.synthesize

    def synthesize(self, *, emit, **kwargs):
        tap.calls += 1

        def tapped(chunk: bytes) -> bool:
            tap.chunks.append(chunk)
            keep_going = emit(chunk)
            if len(tap.chunks) == 1 and not tap.gate.is_set():
                tap.held.set()
                assert tap.gate.wait(10), "test never released the engine"
            tap.stopped_early = tap.stopped_early or not keep_going
            return keep_going

        try:
            return original(self, emit=tapped, **kwargs)
        finally:
            tap.finished.set()

    monkeypatch.setattr(EspeakEngine, "synthesize", synthesize)
    return tap
