"""Coqui XTTS v2 through the maintained `coqui-tts` package (import name `TTS`).

Three things differ from calling `Xtts.inference_stream` directly:
- Conditioning (GPT conditioning latent + speaker embedding) is computed once per voice and cached, never
  per request: from a built-in studio speaker, a preloaded reference clip (first use), or latents a cloning
  job stored (`latents` path in storage).
- Streaming decodes with linear cost. Upstream re-runs the HiFi-GAN decoder over ALL latents at every chunk
  (quadratic in utterance length). Here the cheap part (interpolating GPT latents to decoder frames) is
  redone over the whole sentence, exactly as the one-pass decoder does it, and the expensive HiFi-GAN runs
  only on a window: the new frames plus `context` frames on the left and `lookahead` frames on the right
  that it needs to be exact at the window's edges. Frames are emitted once they have their right context,
  so the streamed clip has exactly as many samples as a one-pass decode, with no crossfade guesswork.
- Long text is split at sentence boundaries within the model's character and token limits, and the sentences
  are streamed one after the other.
"""
import io
import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path

from synthesis.engines.base import (
    EmitPcm, Engine, EngineError, EngineInfo, EngineUnavailable, Prosody, primary_language,
)
from synthesis.frontend import split_sentences

logger = logging.getLogger(__name__)

MODEL_NAME = "tts_models/multilingual/multi-dataset/xtts_v2"
REQUIRED_FILES = ("model.pth", "config.json", "vocab.json")


def license_accepted() -> bool:
    return os.environ.get("TTS_AGREE_TO_CPML") == "1" or os.environ.get("COQUI_TOS_AGREED") == "1"


class _LatentWindowDecoder:
    """Turns a growing sequence of GPT latents into audio, one HiFi-GAN window at a time."""

    def __init__(self, hifigan_decoder, speaker_embedding, *, speed: float, context: int, lookahead: int):
        self.decoder = hifigan_decoder
        self.g = speaker_embedding
        self.length_scale = 1.0 / max(speed, 0.05)
        self.context = context
        self.lookahead = lookahead
        self.emitted_frames = 0

    def _frames(self, latents):
        """[1, T, C] latents -> [1, C, F] decoder frames, exactly as HifiDecoder.forward (plus speed) does."""
        import torch.nn.functional as F

        z = latents.transpose(1, 2)
        if self.length_scale != 1.0:
            z = F.interpolate(z, scale_factor=self.length_scale, mode="linear")
        d = self.decoder
        z = F.interpolate(z, scale_factor=[d.ar_mel_length_compression / d.output_hop_length], mode="linear")
        if d.output_sample_rate != d.input_sample_rate:
            z = F.interpolate(z, scale_factor=[d.output_sample_rate / d.input_sample_rate], mode="linear")
        return z

    def decode(self, latents, *, final: bool):
        """Audio for the frames that became final since the last call ([samples] float tensor, maybe empty)."""
        z = self._frames(latents)
        total = z.shape[-1]
        ready = total if final else total - self.lookahead
        if ready <= self.emitted_frames:
            return None
        start = max(0, self.emitted_frames - self.context)
        wav = self.decoder.waveform_decoder(z[:, :, start:total], g=self.g).reshape(-1)
        hop = wav.shape[0] // (total - start)
        audio = wav[(self.emitted_frames - start) * hop : (ready - start) * hop]
        self.emitted_frames = ready
        return audio


class XttsEngine(Engine):
    name = "xtts"

    def __init__(
        self,
        *,
        model_dir: str = "",
        device: str = "",
        first_chunk_tokens: int = 6,
        chunk_tokens: int = 24,
        context_frames: int = 16,
        lookahead_frames: int = 8,
        cache_size: int = 64,
        temperature: float = 0.75,
    ):
        self.model_dir = model_dir
        self.device_name = device
        self.first_chunk_tokens = first_chunk_tokens
        self.chunk_tokens = chunk_tokens
        self.context_frames = context_frames
        self.lookahead_frames = lookahead_frames
        self.cache_size = cache_size
        self.temperature = temperature
        self.model = None
        self.device = None
        self.languages: tuple[str, ...] = ()
        self._conditioning: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()
        # One sentence at a time on the model. `emit` never blocks (the worker buffers per job), so the lock
        # is never held while waiting for a client; serving many streams at once is the job of batching.
        self._model_lock = threading.Lock()
        self.conditioning_computations = 0
        self.generation_options: dict = {}  # extra Hugging Face generate() options (benchmarks force lengths)

    # --- loading ------------------------------------------------------------------------------------------
    def _checkpoint_dir(self) -> Path:
        if self.model_dir:
            directory = Path(self.model_dir)
            missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
            if missing:
                raise EngineUnavailable(f"XTTS_MODEL_DIR={directory} lacks {', '.join(missing)}")
            return directory
        if not license_accepted():
            raise EngineUnavailable(
                "no XTTS weights: set XTTS_MODEL_DIR to a directory with model.pth, config.json and vocab.json, "
                "or accept the Coqui Public Model License with TTS_AGREE_TO_CPML=1 to download them"
            )
        os.environ["COQUI_TOS_AGREED"] = "1"  # never block on coqui's interactive license prompt
        try:
            from TTS.utils.manage import ModelManager

            path, _, _ = ModelManager(progress_bar=False).download_model(MODEL_NAME)
        except Exception as exc:  # network, disk, hub: all mean "not available", with the reason
            raise EngineUnavailable(f"cannot download {MODEL_NAME} into TTS_HOME: {exc}") from exc
        return Path(path)

    def load(self) -> EngineInfo:
        directory = self._checkpoint_dir()  # first: without weights, do not pay for importing torch
        try:
            import torch
            from TTS.tts.configs.xtts_config import XttsConfig
            from TTS.tts.models.xtts import Xtts
        except ImportError as exc:
            raise EngineUnavailable(f"coqui-tts is not installed: {exc}") from exc
        self.device = torch.device(self.device_name or ("cuda" if torch.cuda.is_available() else "cpu"))
        try:
            config = XttsConfig()
            config.load_json(str(directory / "config.json"))
            model = Xtts(config)
            model.load_checkpoint(config, checkpoint_dir=str(directory), eval=True)
            model.to(self.device)
        except Exception as exc:
            raise EngineUnavailable(f"cannot load XTTS from {directory}: {exc}") from exc
        self.model = model
        self.languages = tuple(config.languages)
        speakers = sorted(model.speaker_manager.speakers) if model.speaker_manager else []
        return EngineInfo(
            name=self.name,
            sample_rate=model.args.output_sample_rate,
            languages=self.languages,
            supports_cloning=True,
            supports_streaming=True,
            details={"device": str(self.device), "model_dir": str(directory), "studio_speakers": len(speakers)},
        )

    # --- conditioning -------------------------------------------------------------------------------------
    def compute_conditioning(self, samples, sample_rate: int) -> bytes:
        """GPT conditioning latent and speaker embedding of a reference clip (mono float samples), serialized."""
        import torch

        audio = torch.as_tensor(samples, dtype=torch.float32).reshape(1, -1).to(self.device)
        with self._model_lock, torch.inference_mode():
            gpt_cond_latent = self.model.get_gpt_cond_latents(audio, sample_rate)
            speaker_embedding = self.model.get_speaker_embedding(audio, sample_rate)
        self.conditioning_computations += 1
        buffer = io.BytesIO()
        torch.save({"gpt_cond_latent": gpt_cond_latent.cpu(), "speaker_embedding": speaker_embedding.cpu()}, buffer)
        return buffer.getvalue()

    def _load_conditioning(self, voice_settings: dict) -> tuple:
        import torch

        if voice_settings.get("speaker"):
            speakers = self.model.speaker_manager.speakers if self.model.speaker_manager else {}
            if voice_settings["speaker"] not in speakers:
                raise EngineError("invalid_voice_settings", f"XTTS has no studio speaker {voice_settings['speaker']!r}")
            entry = speakers[voice_settings["speaker"]]
            return entry["gpt_cond_latent"], entry["speaker_embedding"]
        if voice_settings.get("latents"):
            from django.core.files.storage import default_storage

            with default_storage.open(voice_settings["latents"], "rb") as handle:
                data = torch.load(io.BytesIO(handle.read()), map_location="cpu", weights_only=True)
            return data["gpt_cond_latent"], data["speaker_embedding"]
        if voice_settings.get("reference_audio"):
            from voices.audio import AudioError, decode_reference

            from django.conf import settings

            path = settings.BASE_DIR / voice_settings["reference_audio"]
            try:
                samples, rate = decode_reference(path.read_bytes())
            except (OSError, AudioError) as exc:
                raise EngineError("voice_unavailable", f"reference clip {path} cannot be used: {exc}") from exc
            data = torch.load(io.BytesIO(self.compute_conditioning(samples, rate)), weights_only=True)
            return data["gpt_cond_latent"], data["speaker_embedding"]
        raise EngineError("invalid_voice_settings", "an XTTS voice needs a speaker, reference_audio or latents")

    def conditioning(self, voice_settings: dict) -> tuple:
        """Cached per voice in this worker, bounded (least recently used goes first)."""
        key = next((f"{k}:{voice_settings[k]}" for k in ("speaker", "latents", "reference_audio") if voice_settings.get(k)), "")
        with self._cache_lock:
            if key in self._conditioning:
                self._conditioning.move_to_end(key)
                return self._conditioning[key]
        value = tuple(t.to(self.device) for t in self._load_conditioning(voice_settings))
        with self._cache_lock:
            self._conditioning[key] = value
            while len(self._conditioning) > self.cache_size:
                self._conditioning.popitem(last=False)
        return value

    # --- synthesis ----------------------------------------------------------------------------------------
    def _language(self, language: str) -> str:
        primary = primary_language(language)
        code = "zh-cn" if primary == "zh" else primary
        if code not in self.languages:
            raise EngineError("unsupported_language", f"XTTS does not speak {language!r}")
        return code

    def synthesize(self, *, text: str, language: str, voice_settings: dict, prosody: Prosody, emit: EmitPcm) -> None:
        if self.model is None:
            raise EngineUnavailable("xtts engine used before load()")
        code = self._language(language)
        gpt_cond_latent, speaker_embedding = self.conditioning(voice_settings)
        limit = self.model.tokenizer.char_limits.get(primary_language(code), 250)
        for sentence in split_sentences(text, limit):
            if not self._stream_sentence(sentence, code, gpt_cond_latent, speaker_embedding, prosody, emit):
                return

    def _tokens(self, sentence: str, language: str):
        import torch

        tokens = self.model.tokenizer.encode(sentence.strip().lower(), lang=language)
        if len(tokens) >= self.model.args.gpt_max_text_tokens:
            raise EngineError("text_too_long", f"a sentence of {len(tokens)} tokens exceeds XTTS's limit")
        return torch.IntTensor(tokens).unsqueeze(0).to(self.device)

    def _stream_sentence(self, sentence, language, gpt_cond_latent, speaker_embedding, prosody, emit) -> bool:
        import torch

        gpt = self.model.gpt
        with self._model_lock, torch.inference_mode():
            text_tokens = self._tokens(sentence, language)
            generator = gpt.get_generator(
                fake_inputs=gpt.compute_embeddings(gpt_cond_latent, text_tokens),
                top_k=50, top_p=0.85, temperature=self.temperature, do_sample=True, num_beams=1,
                num_return_sequences=1, length_penalty=1.0, repetition_penalty=10.0,
                output_attentions=False, output_hidden_states=True, return_dict_in_generate=True,
                **self.generation_options,
            )
            decoder = _LatentWindowDecoder(
                self.model.hifigan_decoder, speaker_embedding, speed=prosody.rate,
                context=self.context_frames, lookahead=self.lookahead_frames,
            )
            latents, next_decode = [], self.first_chunk_tokens
            for _token, latent in generator:
                latents.append(latent)
                if len(latents) >= next_decode:
                    # Chunks double up to chunk_tokens: the first is small for time to first audio, and each
                    # next one is generated while the audio already sent plays, so playback never starves.
                    next_decode += min(self.chunk_tokens, len(latents))
                    if not self._emit(decoder.decode(torch.cat(latents, dim=0)[None], final=False), prosody, emit):
                        return False
            if latents:
                return self._emit(decoder.decode(torch.cat(latents, dim=0)[None], final=True), prosody, emit)
        return True

    @staticmethod
    def _emit(audio, prosody: Prosody, emit: EmitPcm) -> bool:
        import torch

        if audio is None or audio.numel() == 0:
            return True
        scaled = (audio.float() * prosody.volume).clamp(-1.0, 1.0)
        return emit((scaled * 32767.0).round().to(torch.int16).cpu().numpy().tobytes())
