"""The audio a client asked for, made chunk by chunk from the engine's 16-bit mono PCM as it arrives.

Every format streams: each engine chunk goes through the resampler (soxr, streaming, so no clicks at chunk
edges) and the encoder (PyAV: FFmpeg's G.711, LAME, libopus, FLAC and AAC encoders), and whatever the encoder
has ready goes to the client at once. A container's header leaves with the first chunk (WAV's says "size
unknown"; Ogg, MP3 frames, FLAC and ADTS need no length up front), so a player starts before the clip ends.
"""
from dataclasses import dataclass

import av
import numpy as np
import soxr

from synthesis.audio import SAMPLE_WIDTH, WAV_HEADER_BYTES, wav_header

SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
OPUS_SAMPLE_RATES = (8000, 16000, 24000, 48000)  # the rates libopus runs at (12 kHz aside)


@dataclass(frozen=True)
class AudioFormat:
    name: str
    content_type: str
    sample_rates: tuple[int, ...] = SAMPLE_RATES
    default_sample_rate: int | None = None  # None: the engine's own rate, no resampling
    codec: str = ""  # PyAV encoder; "" for PCM, which needs none
    container: str = ""  # PyAV muxer for compressed formats; "" for raw codec output
    container_options: dict | None = None
    bitrate: int = 0
    linear: bool = False  # a fixed number of bytes per sample: what reached a client is exact audio time


FORMATS = {
    audio_format.name: audio_format
    for audio_format in (
        AudioFormat("wav", "audio/wav", linear=True),
        AudioFormat("pcm", "audio/L16", linear=True),  # 16-bit little-endian mono: X-Sample-Rate says the rate
        # G.711 for carriers: 8 kHz unless asked otherwise.
        AudioFormat("mulaw", "audio/basic", default_sample_rate=8000, codec="pcm_mulaw", linear=True),
        AudioFormat("alaw", "audio/x-alaw-basic", default_sample_rate=8000, codec="pcm_alaw", linear=True),
        AudioFormat("mp3", "audio/mpeg", codec="libmp3lame", container="mp3", bitrate=64_000),
        # Ogg pages of 20 ms rather than the muxer's 1 s default, so the first audio leaves at once.
        # Opus decoders play at 48 kHz whatever the encoder ran at, so that is the default.
        AudioFormat("opus", "audio/ogg", OPUS_SAMPLE_RATES, 48000, "libopus", "ogg", {"page_duration": "20000"}, 32_000),
        AudioFormat("flac", "audio/flac", codec="flac", container="flac"),
        AudioFormat("aac", "audio/aac", codec="aac", container="adts", bitrate=64_000),
    )
}
# What POST /v1/synthesize and /v1/stream offer (AAC only through the OpenAI-compatible endpoint, which
# names it).
API_FORMATS = ("wav", "pcm", "mulaw", "alaw", "mp3", "opus", "flac")


def sample_rate_error(format_name: str, sample_rate: int | None) -> str | None:
    """Why `sample_rate` cannot be used with the format, or None."""
    if sample_rate is None:
        return None
    allowed = FORMATS[format_name].sample_rates
    if sample_rate not in allowed:
        return f"{format_name} audio can be made at {', '.join(map(str, allowed))} Hz, not {sample_rate}."
    return None


def output_sample_rate(format_name: str, source_rate: int, requested: int | None) -> int:
    """The rate a client gets: the one it asked for, else the format's default, else the engine's own (Opus,
    which runs at a few rates only, gets the nearest of those)."""
    audio_format = FORMATS[format_name]
    rate = requested or audio_format.default_sample_rate or source_rate
    if audio_format.sample_rates == OPUS_SAMPLE_RATES and rate not in OPUS_SAMPLE_RATES:
        rate = min(OPUS_SAMPLE_RATES, key=lambda allowed: abs(allowed - rate))
    return rate


class _Sink:
    """A write-only file for PyAV's muxer: what it writes is taken out after each chunk. No seek, so the muxers
    write for a stream (no back-patched headers)."""

    def __init__(self):
        self.buffer = bytearray()

    def write(self, data) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


class Encoder:
    """One response's audio: `encode(pcm)` for each engine chunk, then `finish()`; each returns the bytes ready to
    send (possibly none yet: an encoder holds a frame's worth of samples)."""

    def __init__(self, format_name: str, *, source_rate: int, sample_rate: int | None = None):
        self.format = FORMATS[format_name]
        self.source_rate = source_rate
        self.sample_rate = output_sample_rate(format_name, source_rate, sample_rate)
        self._resampler = (
            soxr.ResampleStream(source_rate, self.sample_rate, 1, dtype="int16", quality="HQ")
            if self.sample_rate != source_rate else None
        )
        self._codec = self._container = self._stream = self._sink = None
        if self.format.container:
            self._sink = _Sink()
            self._container = av.open(self._sink, mode="w", format=self.format.container,
                                      options=self.format.container_options or {})
            self._stream = self._container.add_stream(self.format.codec, rate=self.sample_rate, layout="mono")
            if self.format.bitrate:  # half as much for narrowband: it carries half the audio band
                self._stream.codec_context.bit_rate = self.format.bitrate // (2 if self.sample_rate <= 16000 else 1)
        elif self.format.codec:
            self._codec = av.CodecContext.create(self.format.codec, "w")
            self._codec.sample_rate, self._codec.layout, self._codec.format = self.sample_rate, "mono", "s16"
        self._samples_in = 0  # output-rate samples handed to the encoder (timestamps)
        self._started = False
        self.source_bytes = 0  # engine PCM taken in
        self.output_bytes = 0  # bytes returned to send
        self._seconds_out = 0.0  # audio in the packets encoded so far (compressed formats)
        self._carried_before = 0  # engine PCM bytes in the packets made before the last output
        # (bytes sent by then, engine PCM bytes they carry): maps what reached a client back to audio time for
        # formats whose bytes are not proportional to it.
        self._checkpoints: list[tuple[int, int]] = []

    @property
    def content_type(self) -> str:
        return self.format.content_type

    @property
    def header_bytes(self) -> int:
        return WAV_HEADER_BYTES if self.format.name == "wav" else 0

    def encode(self, pcm: bytes) -> bytes:
        self.source_bytes += len(pcm)
        if self._resampler is None and not self.format.codec:  # PCM or WAV at the engine's rate: the bytes as they are
            return self._out(self._header() + pcm)
        samples = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=False)
        return self._out(self._encode(samples, last=False))

    def finish(self) -> bytes:
        """The rest: what the resampler and encoder still hold, and the container's trailer."""
        samples = np.zeros(0, dtype="<i2")
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=True)
        return self._out(self._encode(samples, last=True))

    def _header(self) -> bytes:
        """A streamed WAV's header, before its first samples; nothing for every other format."""
        if self._started:
            return b""
        self._started = True
        return wav_header(sample_rate=self.sample_rate) if self.format.name == "wav" else b""

    def _encode(self, samples: np.ndarray, *, last: bool) -> bytes:
        prefix = self._header()
        if not self.format.codec:
            return prefix + samples.astype("<i2", copy=False).tobytes()
        frame = self._frame(samples) if len(samples) else None
        if self._container is not None:
            packets = list(self._stream.encode(frame)) if frame is not None else []
            if last:
                packets += self._stream.encode(None)
            for packet in packets:
                if packet.pts is not None and packet.duration:
                    self._seconds_out = max(self._seconds_out, float((packet.pts + packet.duration) * packet.time_base))
                self._container.mux(packet)
            if last:
                self._container.close()
            return prefix + self._sink.take()
        packets = self._codec.encode(frame) if frame is not None else []
        if last:
            packets = [*packets, *self._codec.encode(None)]
        return prefix + b"".join(bytes(packet) for packet in packets)

    def _frame(self, samples: np.ndarray) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype="<i2").reshape(1, -1),
                                           format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._samples_in
        self._samples_in += len(samples)
        return frame

    def _out(self, data: bytes) -> bytes:
        self.output_bytes += len(data)
        if data and not self.format.linear:
            # The bytes out now surely carry the packets made before this call: a muxer may still hold this
            # call's last ones (an Ogg page fills for 20 ms), and billing must never count audio not sent.
            self._checkpoints.append((self.output_bytes, self._carried_before))
            self._carried_before = min(round(self._seconds_out * self.source_rate) * SAMPLE_WIDTH, self.source_bytes)
        return data

    def source_bytes_received(self, output_bytes: int) -> int:
        """Of the engine's PCM, how much the first `output_bytes` of this response carried (whole samples): exact
        for linear formats; for compressed ones, to the packets made one chunk earlier (so it may bill a
        cut stream a chunk short, never long)."""
        if self.format.linear:
            bytes_per_sample = 1 if self.format.codec else SAMPLE_WIDTH
            samples_out = max(0, output_bytes - self.header_bytes) // bytes_per_sample
            received = samples_out * self.source_rate // self.sample_rate * SAMPLE_WIDTH
        else:
            received = 0
            for sent, carried in self._checkpoints:
                if sent > output_bytes:
                    break
                received = carried
        return min(received, self.source_bytes)
