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
- Streams are served together: synthesize() is called from many threads at once, and each sentence joins one
  batch loop that owns the model (synthesis/engines/xtts_batch.py).
"""
import io
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
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


@dataclass
class _Window:
    """One HiFi-GAN window of a stream: decoder frames `z` [1, C, F], and which of its output samples are new."""

    z: object
    first: bool  # the stream's first window (decoded ahead of the others)
    skip_frames: int  # left context: decoded for exactness at the edge, already emitted
    new_frames: int

    def cut(self, wav):
        hop = wav.shape[-1] // self.z.shape[-1]
        return wav[self.skip_frames * hop : (self.skip_frames + self.new_frames) * hop]


WINDOW_QUANTUM = 16  # decoder frames


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

    def window(self, latents, *, final: bool) -> _Window | None:
        """The window that decodes the frames which became final since the last call (None: none did)."""
        z = self._frames(latents)
        total = z.shape[-1]
        ready = total if final else total - self.lookahead
        if ready <= self.emitted_frames:
            return None
        start = max(0, self.emitted_frames - self.context)
        # More left context (where there is some) rounds the length up to a multiple of WINDOW_QUANTUM: the
        # frames per token are not whole, so windows of the same chunk size differ by a frame or two, and
        # only windows of equal length share a HiFi-GAN call. Extra context only brings the window's edge
        # closer to a one-pass decode.
        start = max(0, start - (-(total - start) % WINDOW_QUANTUM))
        window = _Window(z=z[:, :, start:total], first=self.emitted_frames == 0,
                         skip_frames=self.emitted_frames - start, new_frames=ready - self.emitted_frames)
        self.emitted_frames = ready
        return window

    def waveform(self, z, g):
        """HiFi-GAN over windows of equal length, one per row of `z` [B, C, F] and `g` [B, C_g, 1]."""
        return self.decoder.waveform_decoder(z, g=g)

    def decode(self, latents, *, final: bool):
        """Audio for the frames that became final since the last call ([samples] float tensor, or None)."""
        window = self.window(latents, final=final)
        if window is None:
            return None
        return window.cut(self.waveform(window.z, self.g).reshape(-1))


# One real-time stream needs this many GPT tokens per second (1024-sample stride at 22.05 kHz).
REALTIME_TOKENS_PER_SECOND = 21.5
DTYPES = ("float32", "bfloat16", "float16")


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
        slots: int = 0,
        dtype: str = "",
        cuda_graphs: bool = True,
    ):
        self.model_dir = model_dir
        self.device_name = device
        self.first_chunk_tokens = first_chunk_tokens
        self.chunk_tokens = chunk_tokens
        self.context_frames = context_frames
        self.lookahead_frames = lookahead_frames
        self.cache_size = cache_size
        self.temperature = temperature
        self.slots = slots  # streams decoded together; 0: sized from the device (see _slots)
        self.dtype_name = dtype  # empty: bfloat16 on CUDA, float32 on CPU
        self.cuda_graphs = cuda_graphs
        self.model = None
        self.device = None
        self.loop = None  # the batch loop (synthesis.engines.xtts_batch), made by load()
        self.languages: tuple[str, ...] = ()
        self._conditioning: OrderedDict = OrderedDict()
        self._cache_lock = threading.Lock()
        self._conditioning_lock = threading.Lock()  # the conditioning encoders run one clip at a time
        self.conditioning_computations = 0
        # Hugging Face generate()-style options: do_sample, temperature, top_k, top_p, repetition_penalty,
        # min_new_tokens, max_new_tokens (benchmarks and tests force lengths, tests decode greedily).
        self.generation_options: dict = {}

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
        dtype = self._dtype(torch)
        try:
            config = XttsConfig()
            config.load_json(str(directory / "config.json"))
            model = Xtts(config)
            model.load_checkpoint(config, checkpoint_dir=str(directory), eval=True)
            model.to(self.device)
        except Exception as exc:
            raise EngineUnavailable(f"cannot load XTTS from {directory}: {exc}") from exc
        from synthesis.engines.xtts_batch import BatchedGpt, BatchLoop

        self.model = model
        self.languages = tuple(config.languages)
        for block in model.gpt.gpt.h:  # LayerNorms, embeddings and heads stay float32
            block.attn.to(dtype)
            block.mlp.to(dtype)
        self.loop = BatchLoop(
            model, slots=self._slots(torch, dtype), dtype=dtype, make_decoder=self._window_decoder,
            first_chunk_tokens=self.first_chunk_tokens, chunk_tokens=self.chunk_tokens, cuda_graphs=self.cuda_graphs,
        )
        speakers = sorted(model.speaker_manager.speakers) if model.speaker_manager else []
        checkpoint = (directory / "model.pth").stat()
        from importlib.metadata import PackageNotFoundError, version as package_version

        try:
            coqui = package_version("coqui-tts")
        except PackageNotFoundError:  # TTS importable without its metadata (a copied tree)
            coqui = "unknown"
        return EngineInfo(
            name=self.name,
            sample_rate=model.args.output_sample_rate,
            languages=self.languages,
            supports_cloning=True,
            supports_streaming=True,
            details={
                "device": str(self.device), "model_dir": str(directory), "studio_speakers": len(speakers),
                "dtype": str(dtype).removeprefix("torch."), "slots": self.loop.slots,
                "kv_cache_bytes_per_slot": BatchedGpt.bytes_per_slot(model.gpt, dtype),
            },
            # The weights by size and time (hashing ~1.8 GB at every start would be slow), the package, the dtype.
            version=f"coqui-tts {coqui}; model.pth {checkpoint.st_size}@"
                    f"{int(checkpoint.st_mtime)}; {str(dtype).removeprefix('torch.')}",
        )

    def _dtype(self, torch):
        name = self.dtype_name or ("bfloat16" if self.device.type == "cuda" else "float32")
        if name not in DTYPES:
            raise EngineUnavailable(f"XTTS_DTYPE={name!r}: use one of {', '.join(DTYPES)}")
        if self.device.type == "cpu" and name == "float16":
            raise EngineUnavailable("XTTS_DTYPE=float16 needs a GPU; use bfloat16 or float32 on CPU")
        return getattr(torch, name)

    def _slots(self, torch, dtype) -> int:
        """Batch slots: as configured, else what half the GPU's free memory holds (at most 256) or 16 on CPU."""
        from synthesis.engines.xtts_batch import BatchedGpt

        if self.slots:
            return self.slots
        if self.device.type != "cuda":
            return 16
        free, _total = torch.cuda.mem_get_info(self.device)
        return max(1, min(256, int(free * 0.5) // BatchedGpt.bytes_per_slot(self.model.gpt, dtype)))

    def _window_decoder(self, speaker_embedding, speed: float):
        return _LatentWindowDecoder(
            self.model.hifigan_decoder, speaker_embedding, speed=speed,
            context=self.context_frames, lookahead=self.lookahead_frames,
        )

    def stats(self) -> dict:
        return self.loop.stats() if self.loop else {}

    def saturated(self) -> bool:
        """More would not be served in real time: sentences wait for a slot, a step takes longer than a
        real-time stream can wait for its next token, or HiFi-GAN falls behind (more windows wait for it than
        there are streams: each stream cuts one about every second of audio)."""
        if self.loop is None:
            return False
        stats = self.loop.stats()
        too_slow = stats["slots_in_use"] > 0 and self.loop.step_seconds > 1 / REALTIME_TOKENS_PER_SECOND
        vocoder_behind = stats["windows_waiting"] > max(8, stats["slots_in_use"])
        return stats["sentences_waiting"] > 0 or too_slow or vocoder_behind

    # --- conditioning -------------------------------------------------------------------------------------
    def compute_conditioning(self, samples, sample_rate: int) -> bytes:
        """GPT conditioning latent and speaker embedding of a reference clip (mono float samples), serialized."""
        import torch

        audio = torch.as_tensor(samples, dtype=torch.float32).reshape(1, -1).to(self.device)
        with self._conditioning_lock, torch.inference_mode():
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
        """Called from many threads at once: each sentence joins the batch loop and its audio comes back here."""
        if self.model is None:
            raise EngineUnavailable("xtts engine used before load()")
        code = self._language(language)
        gpt_cond_latent, speaker_embedding = self.conditioning(voice_settings)
        limit = self.model.tokenizer.char_limits.get(primary_language(code), 250)
        options = self._sampling_options()
        for sentence in split_sentences(text, limit):
            if not self._stream_sentence(sentence, code, gpt_cond_latent, speaker_embedding, prosody, options, emit):
                return

    def _sampling_options(self):
        from synthesis.engines.xtts_batch import SamplingOptions

        o = self.generation_options
        return SamplingOptions(
            temperature=o.get("temperature", self.temperature), top_k=o.get("top_k", 50), top_p=o.get("top_p", 0.85),
            repetition_penalty=o.get("repetition_penalty", 10.0), greedy=not o.get("do_sample", True),
            min_new_tokens=o.get("min_new_tokens", 0), max_new_tokens=o.get("max_new_tokens", 0),
        )

    def _tokens(self, sentence: str, language: str):
        import torch

        tokens = self.model.tokenizer.encode(sentence.strip().lower(), lang=language)
        if len(tokens) >= self.model.args.gpt_max_text_tokens:
            raise EngineError("text_too_long", f"a sentence of {len(tokens)} tokens exceeds XTTS's limit")
        return torch.IntTensor(tokens).unsqueeze(0).to(self.device)

    def _stream_sentence(self, sentence, language, gpt_cond_latent, speaker_embedding, prosody, options, emit) -> bool:
        import torch

        from synthesis.engines.xtts_batch import END, Sentence

        with torch.inference_mode():
            prefix = self.loop.gpt.prefix(gpt_cond_latent, self._tokens(sentence, language))
        request = Sentence(prefix=prefix, speaker_embedding=speaker_embedding, speed=prosody.rate, options=options)
        self.loop.submit(request)
        while (audio := request.audio.get()) is not END:
            if isinstance(audio, BaseException):
                raise EngineError("engine_failed", f"XTTS failed: {audio}") from audio
            if not self._emit(audio, prosody, emit):
                request.cancel()  # the loop frees its slot at its next step
                return False
        return True

    @staticmethod
    def _emit(audio, prosody: Prosody, emit: EmitPcm) -> bool:
        import torch

        if audio is None or audio.numel() == 0:
            return True
        scaled = (audio.float() * prosody.volume).clamp(-1.0, 1.0)
        return emit((scaled * 32767.0).round().to(torch.int16).numpy().tobytes())
