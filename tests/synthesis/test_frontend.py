import pytest

from synthesis.engines.base import Prosody
from synthesis.frontend import FrontendError, Pause, Speech, plain_text_segments, spoken_characters, ssml_segments


def test_plain_text_is_one_stretch_of_speech_with_whitespace_tidied():
    assert plain_text_segments("  Hello \n\n world  ") == [Speech("Hello world")]
    assert plain_text_segments("   ") == []
    assert plain_text_segments("Quick", speed=1.5) == [Speech("Quick", Prosody(rate=1.5))]


def test_breaks_by_time_and_strength():
    segments = ssml_segments('<speak>A<break time="1.5s"/>B<break strength="weak"/>C<break/>D</speak>')
    assert segments == [Speech("A"), Pause(1500), Speech("B"), Pause(200), Speech("C"), Pause(400), Speech("D")]


def test_breaks_are_capped():
    assert ssml_segments('<speak>A<break time="90s"/>B</speak>')[1] == Pause(10_000)


def test_prosody_nests_and_multiplies():
    segments = ssml_segments(
        '<speak><prosody rate="slow">slow <prosody rate="200%" volume="+6dB" pitch="high">fast</prosody></prosody> '
        "normal</speak>"
    )
    assert segments[0] == Speech("slow", Prosody(rate=0.75))
    assert segments[1].text == "fast"
    assert segments[1].prosody.rate == pytest.approx(1.5)
    assert segments[1].prosody.pitch == pytest.approx(1.2)
    assert segments[1].prosody.volume == pytest.approx(1.995, abs=0.01)
    assert segments[2] == Speech("normal")


def test_paragraphs_and_sentences_pause_between_but_not_after():
    segments = ssml_segments("<speak><p><s>One.</s><s>Two.</s></p><p>Three.</p></speak>")
    assert segments == [Speech("One."), Pause(250), Speech("Two."), Pause(500), Speech("Three.")]


def test_sub_says_the_alias_and_unknown_elements_still_speak_their_text():
    segments = ssml_segments(
        '<speak xmlns="http://www.w3.org/2001/10/synthesis"><sub alias="World Health Organization">WHO</sub> '
        '<say-as interpret-as="characters">ABC</say-as> <mark name="x"/>end</speak>'
    )
    assert segments == [Speech("World Health Organization ABC end")]


def test_spoken_characters_count_text_not_markup():
    segments = ssml_segments('<speak>Hi <break time="1s"/> there</speak>')
    assert spoken_characters(segments) == len("Hi") + len("there")


@pytest.mark.parametrize(
    "ssml",
    [
        "<speak>unclosed",
        "<voice>not speak</voice>",
        '<speak><break time="soon"/></speak>',
        '<speak><break strength="huge"/></speak>',
        '<speak><prosody rate="warp">x</prosody></speak>',
        '<?xml version="1.0"?><!DOCTYPE speak [<!ENTITY a "aaaa">]><speak>&a;</speak>',
    ],
)
def test_bad_ssml_is_a_clear_error(ssml):
    with pytest.raises(FrontendError) as raised:
        ssml_segments(ssml)
    assert raised.value.code == "invalid_ssml" and raised.value.message
