"""The messages between web processes (and the voice-processing task) and model workers, which both sides
import: their types, and how a request's segments travel. Messages are dicts (JSON-able, pickled over Redis
Streams); every answer carries the job_id and the sender's worker_id.

  web -> job queue         {"type": JOB, "job_id", "reply_to", "engine", "language", "voice_settings",
                            "segments", "accept_by"}
  worker -> reply_to       {"type": ACCEPTED, "sample_rate"}
                           {"type": AUDIO, "seq", "pcm"}   (16-bit mono PCM)
                           {"type": DONE, "samples"}
                           {"type": ERROR, "code", "message"}
  web -> worker's inbox    {"type": CANCEL, "job_id"}
                           {"type": CREDIT, "job_id", "consumed"}   (audio chunks written to the client)
  task -> job queue        {"type": CLONE, "job_id", "reply_to", "engine", "reference", "latents", "accept_by"}
                           (storage names: the clip to read, where to write the latents)
  worker -> reply_to       {"type": ACCEPTED, ...} then {"type": CLONED, "latents"} or ERROR
"""
from synthesis.engines.base import Prosody
from synthesis.frontend import Pause, Segment, Speech

JOB = "tts.job"
CLONE = "tts.clone"
ACCEPTED = "tts.accepted"
AUDIO = "tts.audio"
DONE = "tts.done"
CLONED = "tts.cloned"
ERROR = "tts.error"
CANCEL = "tts.cancel"
CREDIT = "tts.credit"


def segment_message(segment: Segment) -> dict:
    if isinstance(segment, Pause):
        return {"pause_ms": segment.milliseconds}
    prosody = segment.prosody
    return {"text": segment.text, "rate": prosody.rate, "pitch": prosody.pitch, "volume": prosody.volume}


def segment_from_message(message: dict) -> Segment:
    if "pause_ms" in message:
        return Pause(message["pause_ms"])
    return Speech(text=message["text"], prosody=Prosody(rate=message["rate"], pitch=message["pitch"],
                                                        volume=message["volume"]))
