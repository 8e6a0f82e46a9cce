"""Text that arrives in pieces (an LLM's tokens) cut into sentences to speak, for `text` messages on /v1/stream.

A sentence is emitted only once what follows shows that it ended: a piece ending in "." may be the "3." of
"3.5" or the "Dr." of "Dr. Smith", so the cut waits for the next non-space character. `flush()` forces out
what is left. The buffer is bounded: past `max_chars` without an end of sentence, text is cut at the last
clause boundary (, ; : and dashes) or else the last space within the bound.

Rules, in the order they are applied to a run of terminators (". ! ? ..." and CJK 。！？), with any closing
quotes or brackets after it:
- a newline always ends a sentence; CJK terminators end one at once (no space follows them in CJK text);
- otherwise a space must follow: "3.5", "e.g.", "example.com" and "?!x" are not ends;
- ! and ? end a sentence at that space;
- a period or an ellipsis needs the next non-space character: a lowercase letter means it did not end
  ("Dr. smith", "Well... maybe", "approx. five"); neither does a period after a title or abbreviation
  ("Dr.", "Mr.", "vs.", and "No." or "Fig." before a number), after an initial or an acronym
  ("J. K. Rowling", "U.S. Army", "e.g. Paris"), or after a list number with nothing before it
  ("1. Open the app"). Before a capital letter, an ellipsis and abbreviations that often end sentences
  ("etc.", "p.m.", "Inc.") end one.
"""
from dataclasses import dataclass, field

_CJK_TERMINATORS = "。！？"
_TERMINATORS = ".!?…" + _CJK_TERMINATORS
_CLOSERS = "\"')]}»”’」』）】"
_OPENERS = "\"'([{«“‘「『（【"
_CJK_CLAUSE_ENDS = "、，；："  # no space follows them
_CLAUSE_ENDS = ",;:—–" + _CJK_CLAUSE_ENDS
# Titles and abbreviations that are not the end of a sentence whatever follows them.
_NEVER_ENDS = frozenset("mr mrs ms dr prof rev hon st mt sgt capt lt col gen gov sen rep vs cf viz approx dept".split())
# Abbreviations that are not the end of a sentence before a number: "No. 5", "Fig. 2", "p. 12".
_BEFORE_NUMBERS = frozenset("no nos fig figs p pp vol ch art sec".split())
# Often the last word of a sentence: an end when a capital letter follows.
_MAY_END = frozenset("etc a.m p.m am pm inc ltd co corp jr sr al".split())


def _last_word(text: str) -> str:
    words = text.split()
    return words[-1].lstrip(_OPENERS).lower() if words else ""


def _period_ends_sentence(before: str, run: str, following: str) -> bool:
    """Whether a period or ellipsis `run` after `before` ends the sentence, given the next non-space character."""
    if following.islower():
        return False
    if run.strip(".") or len(run) > 1:  # an ellipsis ("...", "…"): before a capital it ends the sentence
        return True
    word = _last_word(before)
    if word in _MAY_END:
        return True
    if word in _NEVER_ENDS or (word in _BEFORE_NUMBERS and following.isdigit()):
        return False
    if len(word) == 1 and word.isalpha() and word != "i":  # an initial: "J. K. Rowling" (but "so did I.")
        return False
    if "." in word and all(len(part) == 1 and part.isalpha() for part in word.split(".")):  # "U.S", "e.g"
        return False
    if word.isdigit() and before.strip() == word:  # a list number: "1. Open the app"
        return False
    return True


def _sentence_end(text: str) -> int | None:
    """Where the first sentence of `text` ends (the index after it), or None while that is not known yet."""
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            if text[:i].strip():
                return i + 1
            i += 1
            continue
        if char not in _TERMINATORS:
            i += 1
            continue
        run_end = i
        while run_end < n and text[run_end] in _TERMINATORS:
            run_end += 1
        end = run_end
        while end < n and text[end] in _CLOSERS:
            end += 1
        if end == n:
            return None  # a closing quote, a space or a digit may still come
        run = text[i:run_end]
        if any(c in _CJK_TERMINATORS for c in run):
            return end
        if not text[end].isspace():
            i = end  # "3.5", "e.g.", "example.com"
            continue
        if "!" in run or "?" in run:
            return end
        following = end
        while following < n and text[following].isspace():
            following += 1
        if "\n" in text[end:following]:
            return end
        if following == n:
            return None  # the next word says whether the period ended the sentence
        if _period_ends_sentence(text[:i], run, text[following]):
            return end
        i = following
    return None


def _forced_cut(text: str, max_chars: int) -> int:
    """Where to cut a run of text longer than `max_chars` with no end of sentence: after the last clause
    boundary in its second half, else at the last space, else at the bound itself."""
    window = text[: max_chars + 1]
    for i in range(max_chars - 1, max_chars // 2, -1):
        if window[i] in _CJK_CLAUSE_ENDS or (
            window[i] in _CLAUSE_ENDS and (i + 1 >= len(window) or window[i + 1].isspace())
        ):
            return i + 1
    space = window.rfind(" ", 1)
    return space if space > 0 else max_chars


def speakable(sentence: str) -> bool:
    """Whether there is anything to say: a lone "..." or "---" between paragraphs makes no utterance."""
    return any(char.isalnum() for char in sentence)


@dataclass
class SentenceBuffer:
    """Text received but not spoken yet, and for each part of it the fields that were in effect when it came
    (a sentence is spoken with those in effect at its first character)."""

    max_chars: int
    text: str = ""
    marks: list[tuple[int, dict]] = field(default_factory=list)  # (offset in text, fields from there on)

    def feed(self, piece: str, fields: dict) -> list[tuple[str, dict]]:
        """Add a piece; the sentences it completed, each with its fields."""
        if piece:
            if not self.marks or self.marks[-1][1] != fields:
                self.marks.append((len(self.text), fields))
            self.text += piece
        sentences = []
        while (end := _sentence_end(self.text)) is not None:
            sentences.append(self._take(end))
        while len(self.text.strip()) > self.max_chars:
            start = len(self.text) - len(self.text.lstrip())
            sentences.append(self._take(start + _forced_cut(self.text[start:], self.max_chars)))
        return [sentence for sentence in sentences if speakable(sentence[0])]

    def flush(self) -> list[tuple[str, dict]]:
        """Everything buffered, as one sentence (none if there is nothing to say)."""
        rest = self._take(len(self.text))
        return [rest] if speakable(rest[0]) else []

    def clear(self) -> None:
        self.text, self.marks = "", []

    def _fields_at(self, offset: int) -> dict:
        return next((fields for start, fields in reversed(self.marks) if start <= offset), {})

    def _take(self, end: int) -> tuple[str, dict]:
        """The text up to `end`, stripped, with the fields in effect at its first character that is not a space."""
        taken = self.text[:end]
        fields = self._fields_at(len(taken) - len(taken.lstrip()))
        self.marks = [(0, self._fields_at(end))] + [(start - end, f) for start, f in self.marks if start > end]
        self.text = self.text[end:]
        return taken.strip(), fields
