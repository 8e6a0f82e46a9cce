"""eSpeak NG through its C API (ctypes), with the library and data from the `espeakng-loader` wheel.

eSpeak keeps global state, so one process-wide lock serializes synthesis; it renders many times faster than
real time, so one stream never waits long for another.
"""
import ctypes
import threading

from synthesis.engines.base import EmitPcm, Engine, EngineError, EngineInfo, EngineUnavailable, Prosody

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH = 1, 2, 3
_DEFAULT_WPM, _DEFAULT_PITCH, _DEFAULT_VOLUME = 175, 50, 100

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _EspeakVoice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _voice_languages(voice: _EspeakVoice) -> list[str]:
    """`languages` is a run of (priority byte, NUL-terminated name) pairs ending with a zero priority."""
    out, address = [], voice.languages
    while address and ctypes.c_ubyte.from_address(address).value:
        name = ctypes.string_at(address + 1)
        out.append(name.decode())
        address += 2 + len(name)
    return out


class _Library:
    """The loaded C library; one per process."""

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError as exc:
            raise EngineUnavailable(f"espeakng-loader is not installed: {exc}") from exc
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise EngineUnavailable(f"cannot load libespeak-ng: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_EspeakVoice))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        self.lib = lib
        self.data_path = data_path
        self.sample_rate = 0
        self.chunk_ms = 0
        self.lock = threading.Lock()
        self.emit: EmitPcm | None = None
        self.stopped = False
        self._callback = _SynthCallback(self._on_audio)  # kept referenced: C holds the pointer

    def initialize(self, chunk_ms: int) -> None:
        sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, chunk_ms, self.data_path.encode(), 0)
        if sample_rate <= 0:
            raise EngineUnavailable(f"espeak_Initialize failed with {sample_rate} (data at {self.data_path})")
        self.sample_rate, self.chunk_ms = sample_rate, chunk_ms
        self.lib.espeak_SetSynthCallback(self._callback)

    def version(self) -> str:
        self.lib.espeak_Info.restype = ctypes.c_char_p
        self.lib.espeak_Info.argtypes = [ctypes.c_void_p]
        return (self.lib.espeak_Info(None) or b"").decode(errors="replace")

    def languages(self) -> list[str]:
        voices = self.lib.espeak_ListVoices(None)
        found, index = set(), 0
        while voices[index]:
            found.update(_voice_languages(voices[index].contents))
            index += 1
        return sorted(found)

    def _on_audio(self, wav, num_samples, events) -> int:
        if self.stopped:
            return 1
        if wav and num_samples > 0 and self.emit is not None:
            if not self.emit(ctypes.string_at(wav, num_samples * 2)):
                self.stopped = True
                return 1
        return 0


_library: _Library | None = None
_library_lock = threading.Lock()


def _shared_library(chunk_ms: int) -> _Library:
    global _library
    with _library_lock:
        if _library is None:
            library = _Library()
            library.initialize(chunk_ms)
            _library = library
        return _library


class EspeakEngine(Engine):
    name = "espeak"

    def __init__(self, chunk_ms: int = 100):
        self.chunk_ms = chunk_ms
        self._library: _Library | None = None

    def load(self) -> EngineInfo:
        self._library = _shared_library(self.chunk_ms)
        return EngineInfo(
            name=self.name,
            sample_rate=self._library.sample_rate,
            languages=tuple(self._library.languages()),
            supports_cloning=False,
            supports_streaming=True,
            details={"chunk_ms": self._library.chunk_ms},
            version=f"espeak-ng {self._library.version()}",
        )

    def synthesize(self, *, text: str, language: str, voice_settings: dict, prosody: Prosody, emit: EmitPcm) -> None:
        library = self._library
        if library is None:
            raise EngineUnavailable("espeak engine used before load()")
        voice_name = str(voice_settings.get("espeak_voice") or language)
        encoded = text.encode("utf-8")
        with library.lock:
            lib = library.lib
            if lib.espeak_SetVoiceByName(voice_name.encode()) != 0:
                raise EngineError("invalid_voice_settings", f"eSpeak NG has no voice named {voice_name!r}")
            lib.espeak_SetParameter(_PARAM_RATE, max(80, min(450, round(_DEFAULT_WPM * prosody.rate))), 0)
            lib.espeak_SetParameter(_PARAM_PITCH, max(0, min(100, round(_DEFAULT_PITCH * prosody.pitch))), 0)
            lib.espeak_SetParameter(_PARAM_VOLUME, max(0, min(200, round(_DEFAULT_VOLUME * prosody.volume))), 0)
            # eSpeak adds random noise (breath, fricatives): a fixed seed makes the same request give the
            # same audio, which keeps caching and comparisons meaningful.
            lib.espeak_ng_SetRandSeed(0)
            library.emit, library.stopped = emit, False
            try:
                result = lib.espeak_Synth(encoded, len(encoded) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            finally:
                library.emit = None
            if result != 0 and not library.stopped:
                raise EngineError("engine_failed", f"eSpeak NG synthesis failed with code {result}")
