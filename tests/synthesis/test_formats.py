"""Output formats: every format decodes back to the engine's audio (its length and its content), streams as it is
made, and is what the response says it is."""
import io
import json
import struct

import av
import numpy as np
import pytest
import soxr
from channels.testing import WebsocketCommunicator

from synthesis.encoders import API_FORMATS, FORMATS, Encoder
from synthesis.engines import load_engine
from synthesis.engines.base import Prosody

SOURCE_RATE = 22050  # eSpeak's
CONTENT_TYPES = {"wav": "audio/wav", "pcm": "audio/L16", "mulaw": "audio/basic", "alaw": "audio/x-alaw-basic",
                 "mp3": "audio/mpeg", "opus": "audio/ogg", "flac": "audio/flac", "aac": "audio/aac"}
# How much longer than the source a decoder may return a clip: encoder priming and the last frame's padding.
PADDING_SECONDS = {"mp3": 0.2, "aac": 0.2, "opus": 0.03}


def _g711_decode(data: bytes, law: str) -> np.ndarray:
    """ITU-T G.711 decoding written out, independent of the encoder under test."""
    codes = np.frombuffer(data, dtype=np.uint8).astype(np.int32)
    if law == "mulaw":
        codes = ~codes & 0xFF
        exponent, mantissa = (codes >> 4) & 7, codes & 0x0F
        magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
        return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)
    codes = codes ^ 0x55
    exponent, mantissa = (codes >> 4) & 7, codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(codes & 0x80, magnitude, -magnitude).astype(np.int16)


def decode(data: bytes, format_name: str, sample_rate: int) -> tuple[np.ndarray, int]:
    """The samples a player gets out of a response body, and their rate (Opus decodes at 48 kHz, whatever the
    rate the encoder ran at)."""
    if format_name == "pcm":
        return np.frombuffer(data, dtype="<i2"), sample_rate
    if format_name == "wav":
        assert data[:4] == b"RIFF" and data[36:40] == b"data"
        return np.frombuffer(data[44:], dtype="<i2"), struct.unpack("<I", data[24:28])[0]
    if format_name in ("mulaw", "alaw"):
        return _g711_decode(data, format_name), sample_rate
    with av.open(io.BytesIO(data)) as container:
        frames = [frame for frame in container.decode(audio=0)]
    rate = frames[0].sample_rate
    samples = np.concatenate([frame.to_ndarray().reshape(-1) if frame.format.name == "s16"
                              else (frame.to_ndarray()[0] * 32767).astype(np.int16) for frame in frames])
    return samples.astype(np.int16), rate


def snr_db(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Signal to noise of `decoded` against `reference`, at the lag that lines them up best (codec delay)."""
    reference, decoded = reference.astype(np.float64), decoded.astype(np.float64)
    best = -np.inf
    for lag in range(0, 2048 + 1):  # encoders delay by at most a couple of frames
        aligned = decoded[lag:lag + len(reference)]
        if len(aligned) < 0.9 * len(reference):
            break
        ref = reference[:len(aligned)]
        noise = np.sum((ref - aligned) ** 2)
        best = max(best, 10 * np.log10(np.sum(ref ** 2) / max(noise, 1e-9)))
    return best


@pytest.fixture(scope="module")
def speech() -> bytes:
    """Two seconds of real speech from eSpeak at its own rate."""
    chunks = []
    load_engine("espeak").engine.synthesize(
        text="Please hold, your call is important to us. A colleague will be with you shortly.",
        language="en", voice_settings={"espeak_voice": "en-us"}, prosody=Prosody(), emit=lambda c: chunks.append(c) or True,
    )
    return b"".join(chunks)


def _encode_in_chunks(pcm: bytes, encoder: Encoder, chunk_bytes: int = 4096) -> tuple[bytes, list[bytes]]:
    pieces = [encoder.encode(pcm[start:start + chunk_bytes]) for start in range(0, len(pcm), chunk_bytes)]
    pieces.append(encoder.finish())
    return b"".join(pieces), pieces


# (format, asked rate): every format at its default, and resampled down to telephony and up to 48 kHz.
CASES = [(name, None) for name in FORMATS] + [
    (name, rate) for name in FORMATS for rate in (8000, 48000) if name not in ("mulaw", "alaw") or rate == 48000
]
# The least a format must keep of the speech, in dB SNR against the (resampled) source.
MIN_SNR_DB = {"wav": 90, "pcm": 90, "flac": 90, "mulaw": 30, "alaw": 30, "mp3": 8, "aac": 8, "opus": 3}


@pytest.mark.parametrize(("format_name", "sample_rate"), CASES, ids=[f"{f}-{r or 'default'}" for f, r in CASES])
def test_every_format_decodes_back_to_the_speech_it_was_given(speech, format_name, sample_rate):
    encoder = Encoder(format_name, source_rate=SOURCE_RATE, sample_rate=sample_rate)
    body, _ = _encode_in_chunks(speech, encoder)
    decoded, decoded_rate = decode(body, format_name, encoder.sample_rate)
    assert encoder.sample_rate == (sample_rate or FORMATS[format_name].default_sample_rate or SOURCE_RATE)
    assert decoded_rate == (48000 if format_name == "opus" else encoder.sample_rate)
    source = np.frombuffer(speech, dtype="<i2")
    reference = source if decoded_rate == SOURCE_RATE else soxr.resample(source, SOURCE_RATE, decoded_rate, quality="HQ")
    # Duration: every sample is there (a resampler's streamed output may differ from one pass by a few samples),
    # and lossy codecs add no more than their priming and last-frame padding.
    duration, expected = len(decoded) / decoded_rate, len(source) / SOURCE_RATE
    assert expected - 0.002 <= duration <= expected + PADDING_SECONDS.get(format_name, 0.002)
    # Content: lossless formats at the source rate are bit-exact; the others keep the speech.
    if format_name in ("wav", "pcm", "flac") and decoded_rate == SOURCE_RATE:
        assert decoded.tobytes() == speech
    elif format_name in ("wav", "pcm", "flac"):  # the streamed resampler against soxr in one pass
        assert snr_db(reference, decoded) >= 60
    else:
        assert snr_db(reference, decoded) >= MIN_SNR_DB[format_name]


@pytest.mark.parametrize("format_name", ["mp3", "opus", "flac", "aac", "mulaw"])
def test_the_first_bytes_play_before_the_clip_ends(speech, format_name):
    encoder = Encoder(format_name, source_rate=SOURCE_RATE)
    half_a_second = SOURCE_RATE  # bytes of 16-bit audio
    sent = b"".join(encoder.encode(speech[start:start + 4096]) for start in range(0, half_a_second, 4096))
    decoded, rate = decode(sent, format_name, encoder.sample_rate)
    assert len(decoded) / rate >= 0.2  # a player has most of it before the rest is made


@pytest.mark.parametrize("format_name", sorted(FORMATS))
def test_what_reached_a_client_maps_back_to_no_more_audio_than_it_carried(speech, format_name):
    encoder = Encoder(format_name, source_rate=SOURCE_RATE)
    body, pieces = _encode_in_chunks(speech, encoder)
    sizes = np.cumsum([len(piece) for piece in pieces])
    carried = [encoder.source_bytes_received(int(size)) for size in sizes]
    assert carried == sorted(carried) and carried[-1] <= len(speech)
    assert encoder.source_bytes_received(len(body)) >= 0.9 * len(speech)  # the whole body: (nearly) all of it
    assert encoder.source_bytes_received(0) == 0
    for size, received in zip(sizes[:-1], carried[:-1]):
        # Never bills audio the client could not have played: what those bytes decode to is at least as long.
        try:
            decoded, rate = decode(body[:size], format_name, encoder.sample_rate)
        except av.error.InvalidDataError:  # nothing playable yet (an MP3's ID3 tag alone)
            decoded, rate = np.zeros(0), 1
        assert received / 2 / SOURCE_RATE <= len(decoded) / rate + 0.001


# --- over the API ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("streaming", [True, False], ids=["streamed", "collected"])
@pytest.mark.parametrize("format_name", API_FORMATS)
def test_synthesize_answers_in_every_format(asgi, engine_tap, format_name, streaming):
    response = asgi.run(asgi.post, "/v1/synthesize",
                        json={"text": "Please hold.", "format": format_name, "streaming": streaming})
    assert response.status == 200 and response.complete
    assert response.headers["content-type"] == CONTENT_TYPES[format_name]
    rate = int(response.headers["x-sample-rate"])
    decoded, decoded_rate = decode(response.body, format_name, rate)
    assert decoded_rate == rate
    rate = decoded_rate
    made = len(engine_tap.pcm) / 2 / SOURCE_RATE
    assert made - 0.002 <= len(decoded) / rate <= made + PADDING_SECONDS.get(format_name, 0.002)
    if not streaming:
        assert int(response.headers["content-length"]) == len(response.body)


def test_telephony_mulaw_is_8khz_by_default_and_other_rates_on_request(asgi, engine_tap):
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Please hold.", "format": "mulaw"})
    assert response.headers["x-sample-rate"] == "8000"
    assert len(response.body) == pytest.approx(len(engine_tap.pcm) / 2 * 8000 / SOURCE_RATE, abs=2)
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Please hold.", "format": "pcm", "sample_rate": 16000})
    assert response.headers["x-sample-rate"] == "16000"


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"format": "ogg"}, "format"), ({"format": "opus", "sample_rate": 22050}, "sample_rate"),
     ({"sample_rate": 11025}, "sample_rate"), ({"sample_rate": "fast"}, "sample_rate"),
     ({"format": "aac"}, "format")],  # AAC is the OpenAI endpoint's only
)
def test_a_format_or_rate_the_service_cannot_make_is_a_400_naming_the_field(asgi, fields, named):
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "hi", **fields})
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and named in error["message"]


def test_the_first_ogg_opus_bytes_leave_and_play_while_the_engine_is_still_speaking(asgi, engine_tap):
    engine_tap.hold_after_first_chunk()  # eSpeak's first 100 ms, then it waits
    while_held = {}

    async def on_chunk(response):
        if not while_held:
            while_held["engine_finished"] = engine_tap.finished.is_set()
            while_held["decoded"] = decode(response.body, "opus", 0)[0]
            engine_tap.release()

    text = " ".join(["This sentence keeps the synthesizer busy for a while."] * 5)
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": text, "format": "opus"}, on_chunk=on_chunk)
    assert response.complete and while_held["engine_finished"] is False
    # Playable at once: all but what the resampler, encoder and last Ogg page still hold (~60 ms).
    assert len(while_held["decoded"]) / 48000 >= 0.02


def test_websocket_utterances_in_ogg_opus_decode_to_their_audio(asgi, engine_tap):
    from callwaiting.asgi import application

    async def scenario():
        ws = WebsocketCommunicator(application, "/v1/stream", headers=[(b"authorization", f"Bearer {asgi.key}".encode())])
        assert (await ws.connect(10))[0]
        await ws.send_to(text_data=json.dumps({"type": "synthesize", "text": "Please hold.", "format": "opus",
                                               "sample_rate": 48000}))
        start = await ws.receive_json_from(10)
        body = b""
        while True:
            output = await ws.receive_output(10)
            if output.get("bytes"):
                body += output["bytes"]
            else:
                done = json.loads(output["text"])
                break
        await ws.disconnect()
        return start, body, done

    start, body, done = asgi.run(scenario)
    assert start["format"] == "opus" and start["sample_rate"] == 48000
    decoded, rate = decode(body, "opus", 48000)
    assert rate == 48000
    assert done["type"] == "done" and done["audio_seconds"] == pytest.approx(len(engine_tap.pcm) / 2 / SOURCE_RATE, abs=0.001)
    assert len(decoded) / rate == pytest.approx(done["audio_seconds"], abs=0.03)
