"""Prometheus metrics of this web process, plus the live workers read from their heartbeats at scrape time."""
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily

from synthesis import heartbeats

disable_created_metrics()  # the *_created series only add noise to every scrape
REGISTRY = CollectorRegistry()
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0)

REQUESTS = Counter("tts_requests", "Synthesis requests by engine and outcome.", ["engine", "status"], registry=REGISTRY)
ERRORS = Counter("tts_errors", "Failed synthesis requests by engine and error code.", ["engine", "code"], registry=REGISTRY)
CHARACTERS = Counter("tts_characters", "Characters synthesized.", ["engine"], registry=REGISTRY)
AUDIO_SECONDS = Counter("tts_audio_seconds", "Seconds of audio delivered.", ["engine"], registry=REGISTRY)
TIME_TO_FIRST_AUDIO = Histogram(
    "tts_time_to_first_audio_seconds", "Request start to first audio chunk.", ["engine"],
    buckets=_LATENCY_BUCKETS, registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "tts_request_duration_seconds", "Request start to last byte.", ["engine"], buckets=_LATENCY_BUCKETS, registry=REGISTRY
)
PHRASE_CACHE_HITS = Counter("tts_phrase_cache_hits", "Requests served from the phrase cache.", ["engine"], registry=REGISTRY)
PHRASE_CACHE_MISSES = Counter(
    "tts_phrase_cache_misses", "Requests that asked for the phrase cache and were synthesized.", ["engine"],
    registry=REGISTRY,
)
PHRASE_CACHE_STORES = Counter("tts_phrase_cache_stores", "Clips stored in the phrase cache.", ["engine"], registry=REGISTRY)
PHRASE_CACHE_EVICTIONS = Counter(
    "tts_phrase_cache_evictions", "Clips evicted from the phrase cache to stay within its byte bound.", ["engine"],
    registry=REGISTRY,
)
ACTIVE_STREAMS = Gauge("tts_active_streams", "Synthesis streams in flight in this process.", ["engine"], registry=REGISTRY)


class _WorkerCollector:
    def collect(self):
        live = heartbeats.live_workers()
        count = GaugeMetricFamily("tts_workers_live", "Model workers with a fresh heartbeat.")
        count.add_metric([], len(live))
        capacity = GaugeMetricFamily("tts_worker_capacity", "Concurrent jobs a worker accepts.", labels=["worker"])
        load = GaugeMetricFamily("tts_worker_load", "Jobs a worker is serving now.", labels=["worker"])
        for info in live:
            capacity.add_metric([info["worker_id"]], info["capacity"])
            load.add_metric([info["worker_id"]], info["load"])
        yield from (count, capacity, load)


REGISTRY.register(_WorkerCollector())


def render() -> bytes:
    return generate_latest(REGISTRY)
