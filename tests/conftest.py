import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.test import APIClient

from tests.asgi import AsgiClient
from tests.factories import TenantFactory, issue_key


@pytest.fixture(autouse=True)
def _fresh_connection_pool():
    """PostgreSQL's connection pool starts each test full. A thread a test starts that reads the database (a
    racing client, a watcher) ends with a pooled connection Django never hands back (its connection is per thread),
    and over a few hundred tests the pool's 20 would run dry: later tests would get 503s, not their own failures.
    Production threads go through close_old_connections (database_sync_to_async, request_finished)."""
    yield
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if getattr(connection, "pool", None) is not None:
            connection.close()
            connection.close_pool()


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Rate-limit counters, stream slots, worker heartbeats and cached phrases never leak between tests."""
    from synthesis import phrase_cache

    def clear():
        cache.clear()  # on Redis, the phrase cache's keys too: they are in the same database
        if not django_settings.REDIS_URL:
            phrase_cache.store().clear()

    clear()
    yield
    clear()


@pytest.fixture
def preloaded_voices(db):
    call_command("sync_voices", verbosity=0, stdout=open("/dev/null", "w"))


@pytest.fixture
def tenant(db):
    return TenantFactory()


@pytest.fixture
def api_key(tenant) -> str:
    return issue_key(tenant)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture(scope="session")
def tiny_xtts_dir(tmp_path_factory):
    """The tiny XTTS-shaped checkpoint (random weights, real HiFi-GAN size), built once per test session."""
    from tests.xtts_tiny import build_tiny_xtts

    return build_tiny_xtts(tmp_path_factory.mktemp("xtts-tiny"))


@pytest.fixture(scope="session")
def mid_xtts_dir(tmp_path_factory):
    """A mid-size random XTTS (2 GPT layers of 128 channels, 4 heads, the real 8194 audio tokens): enough heads,
    layers and vocabulary for batched decoding to be tested where the tiny one would hide mistakes."""
    from tests.xtts_tiny import build_tiny_xtts

    return build_tiny_xtts(
        tmp_path_factory.mktemp("xtts-mid"), gpt_layers=2, gpt_n_model_channels=128, gpt_n_heads=4,
        gpt_num_audio_tokens=8194, gpt_start_audio_token=8192, gpt_stop_audio_token=8193, decoder_input_dim=128,
    )


@pytest.fixture
def xtts_enabled(settings, tiny_xtts_dir, tmp_path):
    """Workers load XTTS from the tiny checkpoint; media goes to a fresh folder; loading may take a while."""
    settings.XTTS_MODEL_DIR = str(tiny_xtts_dir)
    settings.TTS_JOB_ACCEPT_TIMEOUT = 60
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "media")},
    }}
    return tmp_path / "media"


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
