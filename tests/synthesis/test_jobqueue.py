"""The Redis job queue on its own, against the real Redis (CI's second pass): each job goes to exactly one
worker, a dead worker's unacknowledged job goes to exactly one other, and inboxes lose nothing."""
import asyncio
import collections
import os
import uuid

import pytest

from synthesis.jobqueue import MemoryJobQueue, RedisJobQueue

needs_redis = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="needs Redis")


@pytest.fixture
def redis_queue(settings):
    settings.TTS_JOB_QUEUE = f"test:jobs:{uuid.uuid4().hex}"

    def make() -> RedisJobQueue:
        return RedisJobQueue(os.environ["REDIS_URL"])

    return make


def _all_alive(names):
    async def alive(worker_ids):
        return {worker_id: worker_id in names for worker_id in worker_ids}

    return alive


@needs_redis
def test_a_burst_of_jobs_is_shared_by_two_workers_each_job_once(redis_queue):
    async def scenario():
        web, worker_a, worker_b = redis_queue(), redis_queue(), redis_queue()
        taken = collections.Counter()
        by = collections.defaultdict(int)

        async def work(queue, name):
            while (delivery := await queue.take(name, 0.3)) is not None:
                taken[delivery.job["n"]] += 1
                by[name] += 1
                await queue.ack(delivery)

        for n in range(300):
            await web.submit({"n": n})
        await asyncio.gather(work(worker_a, "a"), work(worker_b, "b"))
        length = await web.redis.xlen(web.stream)
        for queue in (web, worker_a, worker_b):
            await queue.close()
        return taken, by, length

    taken, by, length = asyncio.run(scenario())
    assert sorted(taken) == list(range(300)) and set(taken.values()) == {1}
    assert by["a"] and by["b"]
    assert length == 0  # acknowledged jobs leave the stream


@needs_redis
def test_a_dead_workers_unacknowledged_job_goes_to_exactly_one_other_worker(redis_queue, settings):
    settings.TTS_WORKER_DEAD_AFTER = 0.2

    async def scenario():
        web, dead, rescuers = redis_queue(), redis_queue(), [redis_queue() for _ in range(3)]
        await web.submit({"n": 1})
        lost = await dead.take("dead", 1)
        assert lost is not None  # taken, never acknowledged: then the worker died
        alive = _all_alive({"r0", "r1", "r2"})
        assert await rescuers[0].claim_orphans("r0", _all_alive({"dead", "r0"}), 1) == []  # alive: left alone
        await asyncio.sleep(0.25)  # the claim needs the job idle for TTS_WORKER_DEAD_AFTER
        claims = await asyncio.gather(*(q.claim_orphans(f"r{i}", alive, 1) for i, q in enumerate(rescuers)))
        for queue in (web, dead, *rescuers):
            await queue.close()
        return lost, [c for claim in claims for c in claim]

    lost, claimed = asyncio.run(scenario())
    assert len(claimed) == 1
    assert claimed[0].entry == lost.entry and claimed[0].job == {"n": 1} and claimed[0].deliveries == 2


@needs_redis
def test_a_withdrawn_job_is_never_handed_out(redis_queue):
    async def scenario():
        web, worker = redis_queue(), redis_queue()
        entry = await web.submit({"n": 1})
        await web.submit({"n": 2})
        await web.withdraw(entry)
        first = await worker.take("w", 0.2)
        second = await worker.take("w", 0.2)
        await web.close()
        await worker.close()
        return first, second

    first, second = asyncio.run(scenario())
    assert first.job == {"n": 2} and second is None


@needs_redis
def test_inboxes_lose_nothing_and_refuse_sends_once_gone(redis_queue):
    async def scenario():
        reader, senders = redis_queue(), [redis_queue() for _ in range(4)]
        received = collections.defaultdict(list)
        everything = asyncio.Event()

        def on_message(message):
            received[message["sender"]].append(message["seq"])
            if sum(map(len, received.values())) == 4 * 250:
                everything.set()

        await reader.open_inbox("web:test", on_message)

        async def send(queue, sender):
            for seq in range(250):
                assert await queue.send("web:test", {"sender": sender, "seq": seq, "pcm": b"\x00\x01" * 64})

        await asyncio.gather(*(send(q, n) for n, q in enumerate(senders)))
        await asyncio.wait_for(everything.wait(), 30)
        nowhere = await senders[0].send("web:nobody", {"seq": 0})
        await reader.close()
        for queue in senders:
            await queue.close()
        return received, nowhere

    received, nowhere = asyncio.run(scenario())
    assert all(received[n] == list(range(250)) for n in range(4))  # all of them, each sender's in order
    assert nowhere is False  # nobody reads that inbox: the sender learns it, and no stream is created


def test_the_memory_queue_skips_withdrawn_jobs_too():
    async def scenario():
        queue = MemoryJobQueue()
        entry = await queue.submit({"n": 1})
        await queue.submit({"n": 2})
        await queue.withdraw(entry)
        return await queue.take("w", 0.1), await queue.take("w", 0.05)

    first, second = asyncio.run(scenario())
    assert first.job == {"n": 2} and second is None


def test_an_answer_to_a_job_this_process_gave_up_tells_its_worker_to_stop():
    """A job withdrawn after a worker read it: the worker's first answer finds no taker here, and the worker is
    told to cancel (once), so it never streams for nobody."""
    from synthesis.dispatch import ReplyRouter
    from synthesis.jobqueue import worker_inbox

    async def scenario():
        queue = MemoryJobQueue()
        told = []
        await queue.open_inbox(worker_inbox("w1"), told.append)
        router = ReplyRouter(queue)
        waiting = router.open("live")
        router.deliver({"type": "tts.audio", "job_id": "live", "worker_id": "w1", "pcm": b"\x00\x00"})
        for kind in ("tts.accepted", "tts.audio", "tts.audio"):
            router.deliver({"type": kind, "job_id": "gone", "worker_id": "w1"})
        router.deliver({"type": "tts.done", "job_id": "other", "worker_id": "w1"})  # ended: nothing to stop
        await asyncio.sleep(0)  # the cancel is sent by a task
        return waiting.qsize(), told

    delivered, told = asyncio.run(scenario())
    assert delivered == 1
    assert told == [{"type": "tts.cancel", "job_id": "gone"}]
