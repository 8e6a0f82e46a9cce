import pytest

from synthesis.engines.base import Prosody
from callwaiting.errors import ApiError
from synthesis.frontend import MAX_SSML_DEPTH, Pause, Speech, plain_text_segments, spoken_characters, ssml_segments


def test_plain_text_is_one_stretch_of_speech_with_whitespace_tidied():
    assert plain_text_segments("  Hello \n\n world  ") == [Speech("Hello world")]
    assert plain_text_segments("   ") == []
    assert plain_text_segments("Quick", speed=1.5) == [Speech("Quick", Prosody(rate=1.5))]


def test_breaks_by_time_and_strength():
    segments = ssml_segments('<speak>A<break time="1.5s"/>B<break strength="weak"/>C<break/>D</speak>')
    assert segments == [Speech("A"), Pause(1500), Speech("B"), Pause(200), Speech("C"), Pause(400), Speech("D")]


def test_breaks_up_to_ten_seconds_and_longer_ones_are_refused_with_the_limit():
    assert ssml_segments('<speak>A<break time="10s"/>B</speak>')[1] == Pause(10_000)
    with pytest.raises(ApiError, match="at most 10s"):
        ssml_segments('<speak>A<break time="10001ms"/>B</speak>')


@pytest.mark.parametrize(
    ("attribute", "value", "allowed"),
    [
        ("rate", "+401%", "from 20% to 500%"),
        ("rate", "19%", "from 20% to 500%"),
        ("rate", "-100%", "from 20% to 500%"),
        ("pitch", "+301%", "from 25% to 400%"),
        ("volume", "+13dB", "from -60dB to +12dB"),
        ("volume", "-61dB", "from -60dB to +12dB"),
        ("volume", "+" + "9" * 400 + "dB", "from -60dB to +12dB"),
    ],
)
def test_prosody_values_out_of_range_are_refused_with_the_range(attribute, value, allowed):
    with pytest.raises(ApiError) as raised:
        ssml_segments(f'<speak><prosody {attribute}="{value}">x</prosody></speak>')
    assert raised.value.code == "invalid_ssml" and allowed in raised.value.message and attribute in raised.value.message


def test_prosody_at_its_limits_is_accepted_and_nesting_stays_within_them():
    edge = ssml_segments('<speak><prosody rate="500%" pitch="25%" volume="+12dB">x</prosody></speak>')[0].prosody
    assert (edge.rate, edge.pitch) == (5.0, 0.25) and edge.volume == pytest.approx(3.98, abs=0.01)
    nested = '<speak>' + '<prosody rate="x-fast" volume="loud">' * 20 + "x" + "</prosody>" * 20 + "</speak>"
    assert ssml_segments(nested)[0].prosody == Prosody(rate=5.0, volume=pytest.approx(3.98, abs=0.01))


def test_nesting_is_bounded_before_the_walk():
    assert ssml_segments("<speak>" + "<s>" * (MAX_SSML_DEPTH - 1) + "ok" + "</s>" * (MAX_SSML_DEPTH - 1) + "</speak>")
    with pytest.raises(ApiError, match=f"at most {MAX_SSML_DEPTH} deep"):
        ssml_segments("<speak>" + "<s>" * MAX_SSML_DEPTH + "deep" + "</s>" * MAX_SSML_DEPTH + "</speak>")


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
    with pytest.raises(ApiError) as raised:
        ssml_segments(ssml)
    assert raised.value.code == "invalid_ssml" and raised.value.message
