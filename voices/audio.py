"""Reference audio for voice cloning: decode any common container with PyAV (FFmpeg inside the wheel),
downmix and resample to one rate, and check that the clip can make a good voice."""
import io
from dataclasses import dataclass

import av
import numpy as np

REFERENCE_SAMPLE_RATE = 22050  # what XTTS's conditioning encoders expect
SILENCE_RMS_DBFS = -45.0
CLIPPED_FRACTION = 0.01


class AudioError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ReferenceLimits:
    min_seconds: float
    max_seconds: float


def _wav_truncated(data: bytes) -> bool:
    """A RIFF/WAVE file whose data chunk declares more bytes than the file holds (FFmpeg would not say)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return False
    offset = 12
    while offset + 8 <= len(data):
        chunk, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if chunk == b"data":
            return size != 0xFFFFFFFF and offset + 8 + size > len(data)
        offset += 8 + size + (size & 1)
    return True  # no data chunk before the end of the file


def decode_reference(data: bytes, sample_rate: int = REFERENCE_SAMPLE_RATE) -> tuple[np.ndarray, int]:
    """Mono float32 samples in [-1, 1] at `sample_rate`; AudioError when the bytes are not decodable audio."""
    if _wav_truncated(data):
        raise AudioError("audio_truncated", "the WAV file ends before its audio data does; upload it again")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.error.FFmpegError, ValueError) as exc:
        raise AudioError("invalid_audio", f"not a readable audio file ({exc})") from None
    with container:
        if not container.streams.audio:
            raise AudioError("invalid_audio", "the file has no audio stream")
        stream = container.streams.audio[0]
        declared = float(stream.duration * stream.time_base) if stream.duration else None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        parts = []
        try:
            for frame in container.decode(audio=0):
                parts.extend(resampled.to_ndarray().reshape(-1) for resampled in resampler.resample(frame))
            parts.extend(resampled.to_ndarray().reshape(-1) for resampled in resampler.resample(None))
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioError("invalid_audio", f"the audio is damaged or truncated ({exc})") from None
    if not parts:
        raise AudioError("invalid_audio", "the file contains no audio samples")
    samples = np.concatenate(parts).astype(np.float32)
    if declared and len(samples) / sample_rate < 0.9 * declared:
        raise AudioError(
            "audio_truncated",
            f"the file says {declared:.1f} s but holds only {len(samples) / sample_rate:.1f} s; upload it again",
        )
    return samples, sample_rate


def check_reference(samples: np.ndarray, sample_rate: int, limits: ReferenceLimits) -> None:
    """A clip good enough to clone from: long enough, short enough, not silent, not clipped."""
    seconds = len(samples) / sample_rate
    if seconds < limits.min_seconds:
        raise AudioError("audio_too_short", f"{seconds:.1f} s of audio; at least {limits.min_seconds:g} s is needed")
    if seconds > limits.max_seconds:
        raise AudioError("audio_too_long", f"{seconds:.1f} s of audio; at most {limits.max_seconds:g} s is accepted")
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    if rms == 0 or 20 * np.log10(rms) < SILENCE_RMS_DBFS:
        raise AudioError("audio_silent", "the clip is (nearly) silent; record the speaker closer to the microphone")
    if float(np.mean(np.abs(samples) >= 0.999)) > CLIPPED_FRACTION:
        raise AudioError("audio_clipped", "the clip is clipped (too loud); record it again at a lower level")


def encode_wav(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of the normalized reference, the form it is stored in."""
    from synthesis.audio import wav_file

    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    return wav_file(pcm, sample_rate=sample_rate)
