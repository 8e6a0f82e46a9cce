"""Audio containers for the HTTP responses."""
import struct

# A streamed WAV does not know its final length; 0xFFFFFFFF in both size fields is the convention that
# ffmpeg, browsers and telephony players accept as "until the end of the stream".
UNKNOWN_SIZE = 0xFFFFFFFF
SAMPLE_WIDTH = 2  # 16-bit PCM everywhere between engines and encoders
WAV_HEADER_BYTES = 44


def wav_header(*, sample_rate: int, channels: int = 1, data_bytes: int | None = None) -> bytes:
    riff_size = UNKNOWN_SIZE if data_bytes is None else 36 + data_bytes
    data_size = UNKNOWN_SIZE if data_bytes is None else data_bytes
    block_align = channels * SAMPLE_WIDTH
    return (
        b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block_align, block_align, 16)
        + b"data" + struct.pack("<I", data_size)
    )


def wav_file(pcm: bytes, *, sample_rate: int) -> bytes:
    return wav_header(sample_rate=sample_rate, data_bytes=len(pcm)) + pcm


def silence(*, milliseconds: int, sample_rate: int) -> bytes:
    return bytes(SAMPLE_WIDTH * (sample_rate * milliseconds // 1000))


def pcm_seconds(byte_count: int, sample_rate: int) -> float:
    return byte_count / SAMPLE_WIDTH / sample_rate if sample_rate else 0.0
