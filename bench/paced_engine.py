"""An engine with the timing of a GPU TTS model, for bench/ws_gaps.py: eSpeak's audio, handed out after
PACED_FIRST_AUDIO_S seconds and then at PACED_SPEED audio seconds per wall second (eSpeak alone answers in
milliseconds, which hides every gap). Plugged in with TTS_ENGINE_CLASSES={"espeak": "paced_engine.PacedEspeak"}
and this folder on PYTHONPATH."""
import os
import time

from synthesis.engines.espeak import EspeakEngine

FIRST_AUDIO_S = float(os.environ.get("PACED_FIRST_AUDIO_S", "0.25"))
SPEED = float(os.environ.get("PACED_SPEED", "2.0"))


class PacedEspeak(EspeakEngine):
    def synthesize(self, *, emit, **kwargs):
        chunks: list[bytes] = []
        super().synthesize(emit=lambda chunk: chunks.append(chunk) or True, **kwargs)  # eSpeak's lock, briefly
        time.sleep(FIRST_AUDIO_S)
        for chunk in chunks:
            if not emit(chunk):
                return
            time.sleep(len(chunk) / 2 / self._library.sample_rate / SPEED)
