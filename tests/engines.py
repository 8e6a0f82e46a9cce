"""Engines for tests that run real worker processes (plugged in with TTS_ENGINE_CLASSES)."""
import os
import time
from pathlib import Path

from synthesis.engines.espeak import EspeakEngine


class HeldEspeak(EspeakEngine):
    """eSpeak that holds each job before its first audio until the file named by HELD_ENGINE_RELEASE exists:
    how a test catches a worker between taking a job and answering it."""

    def synthesize(self, **kwargs):
        release = Path(os.environ["HELD_ENGINE_RELEASE"])
        while not release.exists():
            time.sleep(0.01)
        return super().synthesize(**kwargs)


class LoadHeldEspeak(EspeakEngine):
    """eSpeak standing in for a slow-loading engine (XTTS on a GPU): `load()` returns only once the file named by
    HELD_LOAD_RELEASE exists. Takes (and ignores) the options of whichever engine name it is plugged in as."""

    def __init__(self, **options):
        super().__init__(chunk_ms=100)

    def load(self):
        release = Path(os.environ["HELD_LOAD_RELEASE"])
        while not release.exists():
            time.sleep(0.01)
        return super().load()
