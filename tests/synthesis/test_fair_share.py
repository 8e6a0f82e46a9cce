"""Worker capacity is shared fairly between tenants: one tenant's burst cannot take the service."""
import asyncio
import threading

import pytest

from synthesis.engines.espeak import EspeakEngine
from tests.asgi import AsgiClient
from tests.factories import TenantFactory, issue_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def held_streams(monkeypatch):
    """Every eSpeak call holds after its first chunk until released (eSpeak speaks one call at a time, so the
    worker's other jobs wait for it meanwhile, each in its slot)."""
    state = {"release": threading.Event()}
    original = EspeakEngine.synthesize

    def synthesize(self, *, emit, **kwargs):
        first = [True]

        def held(chunk):
            keep = emit(chunk)
            if first[0]:
                first[0] = False
                state["release"].wait(20)
            return keep

        return original(self, emit=held, **kwargs)

    monkeypatch.setattr(EspeakEngine, "synthesize", synthesize)
    return state


async def _until(condition, timeout=20):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "the state never came"
        await asyncio.sleep(0.01)


def test_a_tenant_over_its_share_gets_429_and_another_tenant_is_served_at_once(live_voices, settings, held_streams):
    from synthesis.worker import ensure_embedded_worker

    settings.TTS_WORKER_CAPACITY = 8  # the embedded worker's slots: the engine's whole capacity here
    hog = AsgiClient(key=issue_key(TenantFactory(max_concurrent_streams=50)))
    other = AsgiClient(key=issue_key(TenantFactory()))

    async def scenario():
        worker = ensure_embedded_worker()
        # Alone, the hog may use every slot but the reserve (past them its calls would wait for a free slot).
        calls = [asyncio.create_task(hog.post("/v1/synthesize", json={"text": f"Call number {n}."})) for n in range(7)]
        await _until(lambda: worker.describe()["load"] == 7)
        newcomer = asyncio.create_task(other.post("/v1/synthesize", json={"text": "My turn, please."}))
        await _until(lambda: worker.describe()["load"] == 8)  # taken from the reserve, not queued behind the hog
        # Now two tenants share the engine: the hog is far over its share of (8 - 1) / 2.
        more = [await hog.post("/v1/synthesize", json={"text": "And another."}) for _ in range(3)]
        held_streams["release"].set()
        return await asyncio.gather(*calls), await newcomer, more

    calls, newcomer, more = asyncio.run(scenario())
    assert [response.status for response in calls] == [200] * 7
    assert newcomer.status == 200 and newcomer.complete
    for refused in more:
        assert refused.status == 429 and refused.json()["error"]["code"] == "too_many_streams"
        assert "fair share" in refused.json()["error"]["message"] and refused.headers["retry-after"]


def test_a_cancel_storm_frees_every_slot_and_leaves_the_service_to_the_others(live_voices):
    """200 x (synthesize + cancel) on one /v1/stream connection, then a hang-up: every cancelled or abandoned job
    gives its worker slot back at once, and another tenant is served right after."""
    from tests.synthesis.test_websocket import _open
    from synthesis.worker import ensure_embedded_worker

    stormy, other = issue_key(TenantFactory(max_concurrent_streams=50)), issue_key(TenantFactory())
    text = ("This is a sentence of about fifty characters long. " * 10)[:500]

    async def scenario():
        ws = await _open(stormy)
        for _ in range(200):
            await ws.send_json_to({"type": "synthesize", "text": text})
            await ws.send_json_to({"type": "cancel"})
        await ws.send_json_to({"type": "synthesize", "text": text})
        await ws.disconnect()
        worker = ensure_embedded_worker()
        await _until(lambda: worker.describe()["load"] == 0)
        return await AsgiClient(key=other).post("/v1/synthesize", json={"text": "Hello there."})

    response = asyncio.run(scenario())
    assert response.status == 200 and response.complete
