"""Batched XTTS (synthesis/engines/xtts_batch.py): many streams decoded together give each stream exactly what
it gets alone, and what Hugging Face's generate() gives it (greedy), whoever shares the batch and whenever
they join, leave, pause or cancel."""
import threading
import time

import numpy as np
import pytest
import torch

from synthesis.engines.base import EngineError, Prosody
from synthesis.engines.xtts import XttsEngine, _LatentWindowDecoder
from synthesis.engines.xtts_batch import END, SamplingOptions, Sentence
from synthesis.frontend import split_sentences
from tests.factories import voice_like

TEXTS = [
    "hello world, thanks for calling!",
    "please hold the line; an agent will be with you shortly.",
    "your appointment is confirmed for tuesday at three.",
    "press one for sales, two for support.",
    "bonjour, merci d'avoir appelé.",
]


def _engine(model_dir, **options) -> XttsEngine:
    engine = XttsEngine(model_dir=str(model_dir), device="cpu", **options)
    engine.load()
    return engine


@pytest.fixture(scope="module")
def mid_engine(mid_xtts_dir):
    return _engine(mid_xtts_dir, slots=6)


@pytest.fixture(scope="module")
def voice(mid_engine):
    return _conditioning(mid_engine)


def _conditioning(engine) -> tuple:
    """A voice's conditioning, put straight into the engine's per-voice cache by the tests that need one."""
    with torch.inference_mode():
        audio = torch.as_tensor(voice_like(3.0), dtype=torch.float32)[None]
        return engine.model.get_gpt_cond_latents(audio, 22050), engine.model.get_speaker_embedding(audio, 22050)


def _sentence(engine, voice, text, *, min_tokens=0, max_tokens=0, greedy=True, speed=1.0) -> Sentence:
    cond, speaker = voice
    with torch.inference_mode():
        prefix = engine.loop.gpt.prefix(cond, engine._tokens(text, "en"))
    options = SamplingOptions(greedy=greedy, min_new_tokens=min_tokens, max_new_tokens=max_tokens)
    return Sentence(prefix=prefix, speaker_embedding=speaker, speed=speed, options=options)


def _audio(sentence: Sentence) -> torch.Tensor:
    parts = []
    while (item := sentence.audio.get(timeout=120)) is not END:
        assert not isinstance(item, BaseException), item
        parts.append(item)
    return torch.cat(parts) if parts else torch.zeros(0)


def _reference(engine, voice, text, *, min_tokens, max_tokens):
    """Tokens and latents of Hugging Face's own greedy generate(), one stream at a time. (Coqui's streaming
    generator always samples, so the non-streaming generate() is the greedy reference; its latents are the
    final-normed last hidden states, exactly what the streaming generator yields.)"""
    gpt = engine.model.gpt
    with torch.inference_mode():
        tokens, generated = gpt.generate(
            voice[0], engine._tokens(text, "en"), do_sample=False, num_beams=1, repetition_penalty=10.0,
            output_hidden_states=True, return_dict_in_generate=True, min_new_tokens=min_tokens,
            max_new_tokens=max_tokens,
        )
        latents = torch.stack([gpt.final_norm(step[-1][0, -1]) for step in generated.hidden_states])
    tokens = tokens[0].tolist()
    if engine.loop.gpt.stop_token in tokens:  # generate() pads after the stop token
        tokens = tokens[: tokens.index(engine.loop.gpt.stop_token) + 1]
    return tokens, latents[: len(tokens)]


def _until(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.002)


LENGTHS = [(0, 40), (25, 25), (30, 60), (0, 12), (10, 33)]  # (min_new_tokens, max_new_tokens) per text


def test_greedy_batched_decoding_is_hugging_faces_one_at_a_time_with_joins_leaves_pause_and_cancel(mid_engine, voice):
    loop = mid_engine.loop
    reference = [_reference(mid_engine, voice, text, min_tokens=lo, max_tokens=hi) for text, (lo, hi) in zip(TEXTS, LENGTHS)]
    sentences = [_sentence(mid_engine, voice, text, min_tokens=lo, max_tokens=hi) for text, (lo, hi) in zip(TEXTS, LENGTHS)]
    audio = {}
    readers = {}

    def read(n):
        readers[n] = threading.Thread(target=lambda: audio.__setitem__(n, _audio(sentences[n])))
        readers[n].start()

    loop.max_unread_chunks = 1  # a reader that does not read pauses its row after one chunk
    try:
        loop.submit(sentences[0]); read(0)
        _until(lambda: len(sentences[0].tokens) >= 10)  # joins while 0 is mid-sentence
        loop.submit(sentences[1]); read(1)
        loop.submit(sentences[2])  # nobody reads it yet: it pauses after its first chunk
        _until(lambda: sentences[2].audio.qsize() >= 1)
        paused_at = len(sentences[2].tokens)
        loop.submit(sentences[3]); read(3)
        readers[3].join(60)  # 3 joined and left while 2 stayed paused
        assert len(sentences[2].tokens) == paused_at
        loop.submit(sentences[4])
        _until(lambda: len(sentences[4].tokens) >= 5)
        sentences[4].cancel()  # leaves mid-sentence
        read(2)  # 2 resumes
        for thread in readers.values():
            thread.join(120)
    finally:
        loop.max_unread_chunks = 8
    assert paused_at < len(sentences[2].tokens)
    for n in (0, 1, 2, 3):
        tokens, latents = reference[n]
        assert sentences[n].tokens == tokens, n
        torch.testing.assert_close(torch.stack(sentences[n].latents), latents, atol=2e-4, rtol=1e-4)
        assert len(audio[n]) > 0
    # The cancelled one was decoded right up to where it left, and its slot is free again.
    assert sentences[4].tokens == reference[4][0][: len(sentences[4].tokens)]
    _until(lambda: loop.stats()["slots_in_use"] == 0)


def test_a_streams_output_does_not_depend_on_who_shares_the_batch(mid_engine, voice):
    alone = _sentence(mid_engine, voice, TEXTS[1], min_tokens=30, max_tokens=30, speed=1.2)
    mid_engine.loop.submit(alone)
    alone_audio = _audio(alone)

    crowd = [_sentence(mid_engine, voice, text, min_tokens=20 + 7 * n, max_tokens=20 + 7 * n) for n, text in enumerate(TEXTS)]
    again = _sentence(mid_engine, voice, TEXTS[1], min_tokens=30, max_tokens=30, speed=1.2)
    for sentence in [*crowd[:2], again, *crowd[2:]]:
        mid_engine.loop.submit(sentence)
    again_audio = _audio(again)
    for sentence in crowd:
        _audio(sentence)
    assert again.tokens == alone.tokens
    assert len(again_audio) == len(alone_audio)
    torch.testing.assert_close(again_audio, alone_audio, atol=1e-4, rtol=1e-3)


def test_batched_hifigan_windows_match_per_window_decoding(mid_engine):
    decoder = mid_engine.model.hifigan_decoder
    torch.manual_seed(1)
    windows = []
    for _ in range(3):
        row = _LatentWindowDecoder(decoder, torch.randn(1, 512, 1), speed=1.0, context=16, lookahead=8)
        windows.append((row, row.window(torch.randn(1, 40, 128), final=False)))
    assert len({window.z.shape for _, window in windows}) == 1
    with torch.inference_mode():
        z = torch.cat([window.z for _, window in windows])
        g = torch.cat([row.g for row, _ in windows])
        batched = windows[0][0].waveform(z, g).reshape(3, -1)
        for (row, window), together in zip(windows, batched):
            alone = row.waveform(window.z, row.g).reshape(-1)
            torch.testing.assert_close(window.cut(together), window.cut(alone), atol=1e-5, rtol=1e-4)


def test_many_threads_get_whole_clips_and_all_first_audio_comes_before_any_clip_ends(tiny_xtts_dir):
    engine = _engine(tiny_xtts_dir, slots=8)
    engine.generation_options = {"min_new_tokens": 60, "max_new_tokens": 60}
    engine._conditioning["reference_audio:shared"] = _conditioning(engine)
    voice_settings = {"reference_audio": "shared"}
    events, lock = [], threading.Lock()
    clips = {}

    def stream(n):
        chunks = []

        def emit(chunk):
            if not chunks:
                with lock:
                    events.append(("first", n))
            chunks.append(chunk)
            return True

        engine.synthesize(text=TEXTS[n % len(TEXTS)], language="en", voice_settings=voice_settings,
                          prosody=Prosody(), emit=emit)
        with lock:
            events.append(("end", n))
        clips[n] = b"".join(chunks)

    threads = [threading.Thread(target=stream, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    kinds = [kind for kind, _ in events]
    assert kinds == ["first"] * 6 + ["end"] * 6  # every caller heard audio before any clip was complete
    # 60 tokens of 1024 samples at 22.05 kHz make about 2.8 s at 24 kHz per sentence, whole, for every stream.
    for n in range(6):
        sentences = len(split_sentences(TEXTS[n % len(TEXTS)], 250))
        assert abs(len(clips[n]) / 2 / 24000 - sentences * 60 * 1024 / 22050) < 0.1 * sentences
    assert engine.stats()["slots_in_use"] == 0


def test_cancel_frees_the_slot_at_once(tiny_xtts_dir):
    engine = _engine(tiny_xtts_dir, slots=2)
    sentence = _sentence(engine, _conditioning(engine), TEXTS[0], min_tokens=500, max_tokens=500)
    engine.loop.submit(sentence)
    sentence.audio.get(timeout=60)  # first audio: it is in its slot
    assert engine.stats()["slots_in_use"] == 1
    sentence.cancel()
    _until(lambda: engine.stats()["slots_in_use"] == 0)
    assert len(sentence.tokens) < 500


def test_a_failing_step_fails_every_stream_in_it_and_the_loop_goes_on(tiny_xtts_dir, monkeypatch):
    engine = _engine(tiny_xtts_dir, slots=4)
    engine.generation_options = {"min_new_tokens": 40, "max_new_tokens": 40}
    engine._conditioning["reference_audio:x"] = _conditioning(engine)
    original, failures = engine.loop.gpt.decode, []

    def decode_failing_once(*args):
        if not failures:
            failures.append(1)
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return original(*args)

    monkeypatch.setattr(engine.loop.gpt, "decode", decode_failing_once)
    errors = []

    def stream():
        try:
            engine.synthesize(text=TEXTS[0], language="en", voice_settings={"reference_audio": "x"},
                              prosody=Prosody(), emit=lambda c: True)
        except EngineError as exc:
            errors.append(exc.code)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors and set(errors) == {"engine_failed"}
    chunks = []
    engine.synthesize(text=TEXTS[1], language="en", voice_settings={"reference_audio": "x"}, prosody=Prosody(),
                      emit=lambda c: chunks.append(c) or True)
    assert chunks  # served after the failure


@pytest.mark.parametrize("dtype", ["bfloat16"])
def test_reduced_precision_runs_on_cpu(tiny_xtts_dir, dtype):
    engine = _engine(tiny_xtts_dir, dtype=dtype, slots=2)
    assert engine.loop.gpt.dtype == getattr(torch, dtype)
    engine.generation_options = {"min_new_tokens": 20, "max_new_tokens": 20}
    engine._conditioning["reference_audio:x"] = _conditioning(engine)
    chunks = []
    engine.synthesize(text=TEXTS[0], language="en", voice_settings={"reference_audio": "x"}, prosody=Prosody(),
                      emit=lambda c: chunks.append(c) or True)
    samples = np.frombuffer(b"".join(chunks), dtype="<i2")
    assert abs(len(samples) / 24000 - 20 * 1024 / 22050) < 0.1 and np.abs(samples).max() > 0


def test_an_unknown_dtype_makes_the_engine_unavailable_with_the_reason(settings, tiny_xtts_dir):
    from synthesis.engines import load_engine

    settings.XTTS_MODEL_DIR = str(tiny_xtts_dir)
    settings.XTTS_DTYPE = "float8"
    loaded = load_engine("xtts")
    assert not loaded.available and "XTTS_DTYPE='float8'" in loaded.reason


def test_an_engine_with_every_slot_taken_says_it_is_saturated(tiny_xtts_dir):
    engine = _engine(tiny_xtts_dir, slots=1)
    voice = _conditioning(engine)
    first, second = (_sentence(engine, voice, text, min_tokens=500, max_tokens=500) for text in TEXTS[:2])
    assert not engine.saturated()
    engine.loop.submit(first)
    engine.loop.submit(second)  # no slot for it: it waits
    _until(lambda: engine.stats()["sentences_waiting"] == 1 and engine.stats()["slots_in_use"] == 1)
    assert engine.saturated()
    first.cancel()
    second.cancel()
    _until(lambda: engine.stats()["slots_in_use"] == 0 and engine.stats()["sentences_waiting"] == 0)
    assert not engine.saturated()
