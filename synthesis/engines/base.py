"""The engine interface: what every speech engine offers to the model worker."""
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

from callwaiting.errors import ApiError


def primary_language(code: str) -> str:
    """'en-US', 'en_us', 'EN' -> 'en': languages are matched on their primary subtag everywhere."""
    return code.replace("_", "-").split("-")[0].lower()


class EngineUnavailable(Exception):
    """The engine is configured but cannot serve; the message says why, for /v1/health and 503 answers."""


class EngineError(ApiError):
    """A request the engine refuses (bad voice settings, unsupported language...): the worker passes its code
    and message on to the client."""


@dataclass(frozen=True)
class Prosody:
    rate: float = 1.0  # speaking-rate multiplier
    pitch: float = 1.0  # pitch multiplier
    volume: float = 1.0  # loudness multiplier


@dataclass(frozen=True)
class EngineInfo:
    name: str
    sample_rate: int
    languages: tuple[str, ...]
    supports_cloning: bool
    supports_streaming: bool
    details: dict = field(default_factory=dict)
    # What the audio depends on besides the request (library and model versions): the phrase cache keys on it,
    # so a new model or library never serves audio made by the old one.
    version: str = ""

    def as_dict(self) -> dict:
        return {
            "sample_rate": self.sample_rate,
            "languages": list(self.languages),
            "supports_cloning": self.supports_cloning,
            "supports_streaming": self.supports_streaming,
            "version": self.version,
            **self.details,
        }


# Receives 16-bit little-endian mono PCM at the engine's sample rate; returns False to stop synthesis.
EmitPcm = Callable[[bytes], bool]


class Engine(ABC):
    name: str

    @abstractmethod
    def load(self) -> EngineInfo:
        """Load once per process (model weights, libraries); raise EngineUnavailable with the reason."""

    @abstractmethod
    def synthesize(self, *, text: str, language: str, voice_settings: dict, prosody: Prosody, emit: EmitPcm) -> None:
        """Synthesize one stretch of plain text, handing audio to `emit` as soon as it exists.

        Blocking; the worker calls it from a thread. Returns early when `emit` returns False.
        """
