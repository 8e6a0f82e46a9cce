import threading

import pytest

from synthesis.engines.espeak import EspeakEngine


class EngineTap:
    """Wraps the eSpeak engine: records every chunk it emits, and can hold it after the first chunk."""

    def __init__(self):
        self.chunks: list[bytes] = []
        self.sentence_bytes: list[int] = []  # audio of each synthesize call (the worker calls it per sentence)
        self.in_call = 0  # synthesize calls running now
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

        def tapped(chunk: bytes) -> bool:
            tap.chunks.append(chunk)
            keep_going = emit(chunk)
            if len(tap.chunks) == 1 and not tap.gate.is_set():
                tap.held.set()
                assert tap.gate.wait(10), "test never released the engine"
            tap.stopped_early = tap.stopped_early or not keep_going
            return keep_going

        before = len(tap.pcm)
        tap.in_call += 1
        try:
            return original(self, emit=tapped, **kwargs)
        finally:
            tap.sentence_bytes.append(len(tap.pcm) - before)
            tap.in_call -= 1
            tap.finished.set()

    monkeypatch.setattr(EspeakEngine, "synthesize", synthesize)
    return tap
