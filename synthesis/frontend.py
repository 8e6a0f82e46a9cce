"""Text and SSML front end: turns a request into segments the worker renders in order.

A segment is either speech (plain text with prosody) or a pause. SSML support follows SSML 1.1 where a phone
product needs it: <speak>, <p>, <s>, <break>, <prosody>, <emphasis>, <say-as>, <sub>, <phoneme>. Text inside
elements we do not interpret is still spoken, as SSML processors are expected to do.
"""
import math
import re
import textwrap
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace

from callwaiting.errors import ApiError
from synthesis.engines.base import Prosody


@dataclass(frozen=True)
class Speech:
    text: str
    prosody: Prosody = Prosody()


@dataclass(frozen=True)
class Pause:
    milliseconds: int


Segment = Speech | Pause

MAX_BREAK_MS = 10_000
# Elements nested deeper than this are refused before anything walks them (real SSML nests a handful deep).
MAX_SSML_DEPTH = 50
# What one <prosody> attribute may ask for, as a multiplier of the enclosing value. Nested elements multiply,
# and the result is kept within the same bounds (SSML lets a processor clamp what it cannot render).
RATE_RANGE = (0.2, 5.0)  # 20% to 500% of the speaking rate
PITCH_RANGE = (0.25, 4.0)  # 25% to 400% of the pitch
VOLUME_DB_RANGE = (-60.0, 12.0)  # -60 dB (near silent) to +12 dB (four times louder)
VOLUME_RANGE = (0.0, 10 ** (VOLUME_DB_RANGE[1] / 20))
_BREAK_STRENGTH_MS = {"none": 0, "x-weak": 100, "weak": 200, "medium": 400, "strong": 700, "x-strong": 1000}
_PARAGRAPH_PAUSE_MS = 500
_SENTENCE_PAUSE_MS = 250
_RATE_WORDS = {"x-slow": 0.5, "slow": 0.75, "medium": 1.0, "default": 1.0, "fast": 1.3, "x-fast": 1.7}
_PITCH_WORDS = {"x-low": 0.6, "low": 0.8, "medium": 1.0, "default": 1.0, "high": 1.2, "x-high": 1.4}
_VOLUME_WORDS = {"silent": 0.0, "x-soft": 0.4, "soft": 0.7, "medium": 1.0, "default": 1.0, "loud": 1.3, "x-loud": 1.6}
_EMPHASIS = {"strong": (0.85, 1.3), "moderate": (0.92, 1.15), "reduced": (1.1, 0.8), "none": (1.0, 1.0)}
_WHITESPACE = re.compile(r"\s+")


def _normalize(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def plain_text_segments(text: str, speed: float = 1.0) -> list[Segment]:
    text = _normalize(text)
    return [Speech(text=text, prosody=Prosody(rate=speed))] if text else []


_SENTENCE_END = re.compile(r"(?<=[.!?。！？;:])\s+")


def split_sentences(text: str, char_limit: int) -> list[str]:
    """One piece per sentence, an over-long sentence wrapped at spaces within `char_limit` characters.
    Nothing is dropped or repeated: joining the pieces with spaces gives the text back."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        pieces.extend(textwrap.wrap(sentence, width=char_limit, break_long_words=True, break_on_hyphens=False))
    return pieces


def spoken_characters(segments: list[Segment]) -> int:
    return sum(len(segment.text) for segment in segments if isinstance(segment, Speech))


def _duration_ms(value: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", value or "")
    if not match:
        raise ApiError("invalid_ssml", f"<break time={value!r}>: expected a duration such as '500ms' or '1.5s'")
    amount = float(match.group(1)) * (1000 if match.group(2) == "s" else 1)  # inf for absurdly long digit strings
    if not amount <= MAX_BREAK_MS:
        raise ApiError(
            "invalid_ssml", f"<break time={value.strip()[:40]!r}> is too long: a break lasts at most {MAX_BREAK_MS // 1000}s"
        )
    return int(amount)


def _percent(amount: float) -> str:
    return f"{amount * 100:g}%"


def _relative(value: str, words: dict[str, float], attribute: str, bounds: tuple[float, float], *,
              decibels: bool = False) -> float:
    """An SSML prosody value as a multiplier: a keyword, 'N%', '+N%'/'-N%', or '+NdB' for volume; one outside
    `bounds` (or, for decibels, VOLUME_DB_RANGE) is refused with the range it must be in."""
    raw = (value or "").strip()
    shown = raw if len(raw) <= 40 else f"{raw[:40]}..."
    value = raw.lower()
    if value in words:
        return words[value]
    low, high = bounds
    if decibels and (match := re.fullmatch(r"([+-]?\d+(?:\.\d+)?)db", value)):
        db = float(match.group(1))
        if not VOLUME_DB_RANGE[0] <= db <= VOLUME_DB_RANGE[1]:
            raise ApiError(
                "invalid_ssml",
                f"<prosody {attribute}={shown!r}> is out of range: from {VOLUME_DB_RANGE[0]:+g}dB to {VOLUME_DB_RANGE[1]:+g}dB",
            )
        return 10 ** (db / 20)
    match = re.fullmatch(r"([+-]?)(\d+(?:\.\d+)?)%", value)
    if match:
        sign, amount = match.group(1), float(match.group(2)) / 100  # inf for absurdly long digit strings
        multiplier = {"+": 1 + amount, "-": 1 - amount}.get(sign, amount)
        if not (math.isfinite(multiplier) and low <= multiplier <= high):
            raise ApiError(
                "invalid_ssml",
                f"<prosody {attribute}={shown!r}> is out of range: from {_percent(low)} to {_percent(high)} of normal "
                f"(relative: {_percent(low - 1)} to +{_percent(high - 1)})",
            )
        return multiplier
    raise ApiError("invalid_ssml", f"<prosody {attribute}={shown!r}> is not a value this service understands")


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


class _SsmlWalker:
    def __init__(self, speed: float):
        self.segments: list[Segment] = []
        self.base = Prosody(rate=speed)

    def speak(self, text: str | None, prosody: Prosody) -> None:
        text = _normalize(text or "")
        if not text:
            return
        last = self.segments[-1] if self.segments else None
        if isinstance(last, Speech) and last.prosody == prosody:
            self.segments[-1] = Speech(text=f"{last.text} {text}", prosody=prosody)
        else:
            self.segments.append(Speech(text=text, prosody=prosody))

    def pause(self, milliseconds: int) -> None:
        if milliseconds <= 0:
            return
        if self.segments and isinstance(self.segments[-1], Pause):
            total = min(self.segments[-1].milliseconds + milliseconds, MAX_BREAK_MS)
            self.segments[-1] = Pause(total)
        else:
            self.segments.append(Pause(milliseconds))

    def walk(self, element: ET.Element, prosody: Prosody) -> None:
        tag = _local(element.tag)
        if tag == "break":
            if "time" in element.attrib:
                self.pause(_duration_ms(element.attrib["time"]))
            else:
                strength = element.attrib.get("strength", "medium")
                if strength not in _BREAK_STRENGTH_MS:
                    raise ApiError("invalid_ssml", f"<break strength={strength!r}> is not a known strength")
                self.pause(_BREAK_STRENGTH_MS[strength])
            self.speak(element.tail, prosody)
            return
        inner = prosody
        if tag == "prosody":
            attrs = element.attrib
            inner = replace(
                prosody,
                rate=_clamp(prosody.rate * _relative(attrs["rate"], _RATE_WORDS, "rate", RATE_RANGE), RATE_RANGE)
                if "rate" in attrs
                else prosody.rate,
                pitch=_clamp(prosody.pitch * _relative(attrs["pitch"], _PITCH_WORDS, "pitch", PITCH_RANGE), PITCH_RANGE)
                if "pitch" in attrs
                else prosody.pitch,
                volume=_clamp(
                    prosody.volume * _relative(attrs["volume"], _VOLUME_WORDS, "volume", VOLUME_RANGE, decibels=True),
                    VOLUME_RANGE,
                )
                if "volume" in attrs
                else prosody.volume,
            )
        elif tag == "emphasis":
            rate, volume = _EMPHASIS.get(element.attrib.get("level", "moderate"), _EMPHASIS["moderate"])
            inner = replace(
                prosody, rate=_clamp(prosody.rate * rate, RATE_RANGE), volume=_clamp(prosody.volume * volume, VOLUME_RANGE)
            )
        structural_pause = {"p": _PARAGRAPH_PAUSE_MS, "s": _SENTENCE_PAUSE_MS}.get(tag, 0)
        if structural_pause and self.segments:
            self.pause(structural_pause)
        if tag == "sub":
            self.speak(element.attrib.get("alias", element.text), inner)
        else:
            self.speak(element.text, inner)
            for child in element:
                self.walk(child, inner)
        if element.tail and element.tail.strip():
            self.pause(structural_pause)  # text after a paragraph or sentence starts a new one
            self.speak(element.tail, prosody)


class _DepthLimitedBuilder(ET.TreeBuilder):
    """Builds the tree and refuses, while parsing, elements nested deeper than MAX_SSML_DEPTH: the walk below
    recurses once per level, so depth must be bounded before it starts."""

    def __init__(self):
        super().__init__()
        self.depth = 0

    def start(self, tag, attrs):
        self.depth += 1
        if self.depth > MAX_SSML_DEPTH:
            raise ApiError("invalid_ssml", f"SSML elements may be nested at most {MAX_SSML_DEPTH} deep")
        return super().start(tag, attrs)

    def end(self, tag):
        self.depth -= 1
        return super().end(tag)


def ssml_segments(ssml: str, speed: float = 1.0) -> list[Segment]:
    if "<!DOCTYPE" in ssml.upper() or "<!ENTITY" in ssml.upper():
        raise ApiError("invalid_ssml", "SSML must not contain a DOCTYPE or entity declarations")
    parser = ET.XMLParser(target=_DepthLimitedBuilder())
    try:
        parser.feed(ssml.strip())
        root = parser.close()
    except ET.ParseError as exc:
        raise ApiError("invalid_ssml", f"SSML is not well-formed XML: {exc}") from None
    if _local(root.tag) != "speak":
        raise ApiError("invalid_ssml", "SSML must have <speak> as its root element")
    walker = _SsmlWalker(speed)
    walker.walk(root, walker.base)
    return walker.segments
