"""Cutting streamed text into sentences (synthesis/text_stream.py), piece by piece as an LLM sends it."""
import pytest

from synthesis.text_stream import SentenceBuffer


def _sentences(text: str, size: int = 1, max_chars: int = 300) -> tuple[list[str], list[str]]:
    """Fed `size` characters at a time: the sentences cut on the way, and what a flush gives at the end."""
    buffer = SentenceBuffer(max_chars=max_chars)
    cut = []
    for i in range(0, len(text), size):
        cut += [sentence for sentence, _ in buffer.feed(text[i:i + size], {})]
    return cut, [sentence for sentence, _ in buffer.flush()]


@pytest.mark.parametrize("size", [1, 2, 3, 1000])
@pytest.mark.parametrize(
    "text, cut, rest",
    [
        ("Hello there. How are you? Fine! Bye", ["Hello there.", "How are you?", "Fine!"], ["Bye"]),
        ("It costs 3.5 dollars. Next", ["It costs 3.5 dollars."], ["Next"]),
        ("Dr. Smith and Mr. Jones met St. Paul. Then", ["Dr. Smith and Mr. Jones met St. Paul."], ["Then"]),
        ("Bring fruit, e.g. apples, i.e. red ones. Ok", ["Bring fruit, e.g. apples, i.e. red ones."], ["Ok"]),
        ("Well... maybe not. I wonder... Maybe", ["Well... maybe not.", "I wonder..."], ["Maybe"]),
        ("J. K. Rowling lives in the U.S. Army town. Yes", ["J. K. Rowling lives in the U.S. Army town."], ["Yes"]),
        ("See No. 5 today. The answer is no. We", ["See No. 5 today.", "The answer is no."], ["We"]),
        ("Open at 9 a.m. Come early. X", ["Open at 9 a.m.", "Come early."], ["X"]),
        ("So did I. Then", ["So did I."], ["Then"]),
        ("Visit example.com today. Ok", ["Visit example.com today."], ["Ok"]),
        ('He said "Stop." Then left.', ['He said "Stop."'], ["Then left."]),
        ("1. Open the app\n2. Tap login\n", ["1. Open the app", "2. Tap login"], []),
        ("你好。我是机器人！好吗？", ["你好。", "我是机器人！"], ["好吗？"]),
        ("Really?! Yes.", ["Really?!"], ["Yes."]),
        ("\n\n---\n\n... Words", [], ["Words"]),
    ],
)
def test_sentences_are_cut_where_they_end_whatever_the_pieces(text, cut, rest, size):
    assert _sentences(text, size) == (cut, rest)


def test_a_period_at_the_end_waits_for_what_follows():
    buffer = SentenceBuffer(max_chars=300)
    assert buffer.feed("It costs 3.", {}) == []  # "3." or "3.5"?
    assert buffer.feed(" ", {}) == []  # "3. dollars" or a new sentence?
    assert buffer.feed("Then", {}) == [("It costs 3.", {})]
    assert buffer.flush() == [("Then", {})]


def test_a_run_without_a_sentence_end_is_cut_at_a_clause_then_a_word_within_the_bound():
    clauses, _ = _sentences("one two three, four five six, seven eight nine, " * 10, max_chars=60)
    assert clauses and all(len(c) <= 60 and c.endswith(",") for c in clauses)
    words, _ = _sentences("word " * 100, max_chars=60)
    assert words and all(len(w) <= 60 and w.endswith("word") for w in words)
    cjk, _ = _sentences("我们明天见面，然后一起吃饭" * 20, max_chars=60)
    assert cjk and all(len(c) <= 60 and c.endswith("，") for c in cjk)
    unbroken, rest = _sentences("a" * 150, max_chars=60)
    assert [len(part) for part in unbroken + rest] == [60, 60, 30]


def test_nothing_is_lost_or_repeated():
    text = "Hi there. Dr. No paid 3.5 dollars, e.g. for tea... and cake! Why? " * 20 + "The end"
    cut, rest = _sentences(text, size=2, max_chars=80)
    assert " ".join(cut + rest).split() == text.split()


def test_each_sentence_keeps_the_fields_in_effect_at_its_first_character():
    buffer = SentenceBuffer(max_chars=300)
    slow, fast = {"speed": 0.5}, {"speed": 2.0}
    assert buffer.feed("Slow and", slow) == []
    assert buffer.feed(" steady. Fa", fast) == [("Slow and steady.", slow)]
    assert buffer.feed("st now. ", fast) == []
    assert buffer.feed("Next", {}) == [("Fast now.", fast)]
    assert buffer.flush() == [("Next", {})]


def test_clear_drops_everything():
    buffer = SentenceBuffer(max_chars=300)
    buffer.feed("Half a sent", {})
    buffer.clear()
    assert buffer.flush() == []
