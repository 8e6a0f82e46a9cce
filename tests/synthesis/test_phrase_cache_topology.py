"""The phrase cache on the production topology: two daphne processes and a dedicated worker over Redis (on
PostgreSQL when the suite runs on it). A phrase one web process synthesized is a hit on the other."""
import os
import shutil

import pytest

from tests.test_topology import PrivateRedis, Topology

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the production topology needs Redis")


@pytest.fixture
def topology(tmp_path):
    redis_server = PrivateRedis(tmp_path) if shutil.which("redis-server") else None
    running = Topology(tmp_path, None, redis_url=redis_server.url if redis_server else None)
    yield running
    running.stop()
    if redis_server is not None:
        redis_server.stop()


def _say(topology, port: int, **fields):
    topology.port, original = port, topology.port
    try:
        response = topology.synthesize(text="Please hold, your call is important to us.", cache=True, **fields)
        return response.status, response.getheader("X-Worker-Id"), response.read()
    finally:
        topology.port = original


def test_a_phrase_cached_by_one_web_process_is_a_hit_on_another(topology):
    topology.start_worker("a", "--engines", "espeak")
    topology.wait_for_engines("espeak")
    second_port = topology.start_web("web2")
    status, worker, first = _say(topology, topology.port)
    assert status == 200 and worker != "phrase-cache"
    jobs = sum(sum(counts.values()) for counts in topology.engine_starts().values())
    status, worker, again = _say(topology, second_port, format="pcm")
    assert status == 200 and worker == "phrase-cache" and again == first[44:]
    assert sum(sum(counts.values()) for counts in topology.engine_starts().values()) == jobs  # no job ran
    assert [row["cached"] for row in topology.usage("cached")] == [False, True]
