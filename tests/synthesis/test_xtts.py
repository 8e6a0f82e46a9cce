"""The XTTS engine on the tiny checkpoint, loaded through the real Xtts.load_checkpoint."""
import numpy as np
import pytest
import torch

from synthesis.engines import load_engine
from synthesis.engines.base import Prosody
from synthesis.engines.xtts import XttsEngine, _LatentWindowDecoder, split_sentences
from tests.factories import voice_like
from tests.xtts_tiny import TINY_XTTS_LANGUAGES


@pytest.fixture
def tiny_engine(tiny_xtts_dir):
    engine = XttsEngine(model_dir=str(tiny_xtts_dir), device="cpu")
    engine.load()
    return engine


def test_loads_from_xtts_model_dir_through_the_real_checkpoint_loader(settings, tiny_xtts_dir):
    settings.XTTS_MODEL_DIR = str(tiny_xtts_dir)
    loaded = load_engine("xtts")
    assert loaded.available, loaded.reason
    status = loaded.status()
    assert status["sample_rate"] == 24000
    assert status["languages"] == list(TINY_XTTS_LANGUAGES)
    assert status["supports_cloning"] is True and status["supports_streaming"] is True
    assert status["device"] == "cpu"
    assert load_engine("xtts") is loaded  # loaded once per process


def test_without_weights_the_reason_is_reported(settings, tmp_path, monkeypatch):
    monkeypatch.delenv("TTS_AGREE_TO_CPML", raising=False)
    monkeypatch.delenv("COQUI_TOS_AGREED", raising=False)
    settings.XTTS_MODEL_DIR = ""
    assert "TTS_AGREE_TO_CPML" in load_engine("xtts").reason
    (tmp_path / "config.json").write_text("{}")
    settings.XTTS_MODEL_DIR = str(tmp_path)
    reason = load_engine("xtts").reason
    assert "model.pth" in reason and "vocab.json" in reason and "config.json" not in reason


def test_a_corrupt_checkpoint_is_unavailable_not_a_crash(settings, tiny_xtts_dir, tmp_path):
    for name in ("config.json", "vocab.json"):
        (tmp_path / name).write_bytes((tiny_xtts_dir / name).read_bytes())
    (tmp_path / "model.pth").write_bytes(b"not a checkpoint")
    settings.XTTS_MODEL_DIR = str(tmp_path)
    loaded = load_engine("xtts")
    assert not loaded.available and "cannot load XTTS" in loaded.reason


@pytest.mark.parametrize("speed", [1.0, 1.3])
def test_windowed_decoding_matches_one_pass_decoding(tiny_engine, speed):
    decoder = tiny_engine.model.hifigan_decoder
    torch.manual_seed(0)
    latents = torch.randn(1, 90, tiny_engine.model.args.decoder_input_dim)
    g = torch.randn(1, 512, 1)
    with torch.inference_mode():
        window = _LatentWindowDecoder(  # the window the engine ships with
            decoder, g, speed=speed, context=tiny_engine.context_frames, lookahead=tiny_engine.lookahead_frames
        )
        one_pass = window.decoder.waveform_decoder(window._frames(latents), g=g).reshape(-1)
        pieces, seen = [], 8
        while seen < latents.shape[1]:
            piece = window.decode(latents[:, :seen], final=False)
            pieces.append(piece if piece is not None else torch.zeros(0))
            seen += 24
        pieces.append(window.decode(latents, final=True))
    streamed = torch.cat(pieces)
    assert len(pieces) >= 4 and all(len(p) % 256 == 0 for p in pieces)
    assert len(streamed) == len(one_pass)  # same number of samples as decoding once
    # No discontinuity at the joins: the streamed clip is the one-pass clip to float rounding.
    assert float((streamed - one_pass).abs().max()) < 1e-4 * float(one_pass.abs().max())


def test_one_pass_decoding_is_what_upstream_decodes(tiny_engine):
    decoder = tiny_engine.model.hifigan_decoder
    latents, g = torch.randn(1, 30, tiny_engine.model.args.decoder_input_dim), torch.randn(1, 512, 1)
    with torch.inference_mode():
        window = _LatentWindowDecoder(decoder, g, speed=1.0, context=24, lookahead=12)
        ours = window.decode(latents, final=True)
        upstream = decoder(latents, g=g).reshape(-1)
    assert torch.equal(ours, upstream)


def test_long_text_is_split_at_sentences_within_the_limit_without_loss():
    text = "First sentence here. Second one! A third? " + "word " * 80 + "end."
    pieces = split_sentences(text, 60)
    assert pieces[:3] == ["First sentence here.", "Second one!", "A third?"]
    assert all(len(piece) <= 60 for piece in pieces)
    assert " ".join(pieces).split() == text.split()


def test_streams_a_cloned_voice_from_its_stored_latents_computed_once(tiny_engine, settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)},
    }}
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    name = default_storage.save("voice/latents.pt", ContentFile(tiny_engine.compute_conditioning(voice_like(), 22050)))
    assert tiny_engine.conditioning_computations == 1
    for seed in (3, 4):
        torch.manual_seed(seed)
        chunks = []
        tiny_engine.synthesize(
            text="Hello there. How are you?", language="en", voice_settings={"latents": name}, prosody=Prosody(),
            emit=lambda chunk, out=chunks: out.append(chunk) or True,
        )
        samples = np.frombuffer(b"".join(chunks), dtype="<i2")
        assert len(samples) >= 2 * 256 and np.abs(samples).max() > 0
    assert tiny_engine.conditioning_computations == 1  # synthesis never recomputes a voice's latents
    default_storage.delete(name)
    tiny_engine.synthesize(  # and the stored latents were read once, then served from the worker's cache
        text="Still here.", language="en", voice_settings={"latents": name}, prosody=Prosody(), emit=lambda c: True
    )


def test_unsupported_language_is_refused(tiny_engine):
    from synthesis.engines.base import EngineError

    with pytest.raises(EngineError) as raised:
        tiny_engine.synthesize(text="hi", language="ja", voice_settings={}, prosody=Prosody(), emit=lambda c: True)
    assert raised.value.code == "unsupported_language"
