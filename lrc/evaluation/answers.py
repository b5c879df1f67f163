"""Reading a model's free-form answer: the option it chose (multiple choice) or the span it named (grounding).

Every benchmark scores through these two functions, so an answer is read the same way everywhere and an
answer that cannot be read is counted (``None`` here, ``unparsed`` in the results), never guessed: the
reference scripts differ on that point (LongVideoBench's assigns a random letter, lmms-eval's MVBench drops
empty answers from the denominator); lrc counts an unreadable answer as wrong and reports how many there were.

:func:`choice` accepts, in this order of trust:

1. a bare letter, alone or marked: ``B``, ``(B)``, ``B.``, ``B)``, ``B:`` ... or the letter starting the answer
   before the option's text: ``B. red``, ``(B) red``;
2. the text of one option, exactly (``red``), or after an answer phrase (``The answer is red.``);
3. a letter after an answer phrase: ``The best answer is B``, ``Best option: (C)``;
4. one letter in parentheses anywhere: ``I think (C) fits``;
5. the text of exactly one option somewhere in the answer, as whole words (``It is red.``);
6. exactly one standalone capital letter among the options' letters (``A`` followed by a lower-case word is the
   article, not an answer).

Two different readings at the same level (``(A) or (B)``) are ambiguous: ``None``.

:func:`span` reads ``start - end`` (seconds or ``mm:ss``) as grounding answers write it (``24.3 - 30.4``,
``from 2.5 to 7 seconds``, ``00:12-00:20``) and returns the first one.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

LETTERS = string.ascii_uppercase

# phrases a model puts before its answer (lower case; longest first, so "the best answer is" wins over "answer is")
ANSWER_PHRASES = tuple(sorted((
    "the answer is", "answer is", "the correct answer is", "the best answer is", "best answer is",
    "the correct option is", "the best option is", "best option is", "correct option is", "best option",
    "the answer", "answer", "option", "i choose", "i select", "my answer is", "the choice is",
), key=len, reverse=True))


def _norm(text: str) -> str:
    """Lower case, punctuation to spaces, whitespace collapsed: how option texts are compared."""
    text = text.lower().translate(str.maketrans({c: " " for c in string.punctuation}))
    return " ".join(text.split())


def _strip_phrases(text: str) -> tuple[str, bool]:
    """``text`` after the last answer phrase in it (and whether there was one)."""
    lower = text.lower()
    best = -1
    for phrase in ANSWER_PHRASES:
        at = lower.rfind(phrase)
        if at >= 0 and at + len(phrase) > best:
            best = at + len(phrase)
    if best < 0:
        return text, False
    return text[best:].lstrip(" :：-=").strip(), True


def _leading_letter(text: str, letters: str) -> str | None:
    """A letter that opens ``text`` as a marked answer: ``B``, ``(B)``, ``B.``, ``B)``, ``B:``, ``[B]``, ``B. red``."""
    m = re.match(r"^[\(\[\{<]?\s*([A-Z])\s*(?:[\)\]\}>.:：,]|$)", text.strip())
    if m and m.group(1) in letters:
        return m.group(1)
    m = re.match(r"^([A-Z])\s*$", text.strip())
    return m.group(1) if m and m.group(1) in letters else None


def _article(rest: str) -> bool:
    """``rest`` opens with the article "A" (``A red circle``), not the letter (``A or B``)."""
    m = re.match(r"A ([a-z]+)", rest)
    return m is not None and m.group(1) not in ("or", "and", "nor")


def _exact_option(text: str, options: Sequence[str], letters: str) -> str | None:
    said = _norm(text)
    hits = {letters[i] for i, opt in enumerate(options) if _norm(opt) and _norm(opt) == said}
    return hits.pop() if len(hits) == 1 else None


def _options_inside(text: str, options: Sequence[str], letters: str) -> set[str]:
    """The letters whose option text appears in ``text`` as whole words (an option inside a longer matching
    option, ``red`` in ``dark red``, does not count when the longer one is there)."""
    said = f" {_norm(text)} "
    found = {i for i, opt in enumerate(options) if _norm(opt) and f" {_norm(opt)} " in said}
    longer = {i for i in found for j in found if i != j and f" {_norm(options[i])} " in f" {_norm(options[j])} "}
    return {letters[i] for i in found - longer}


def choice(answer: str, options: Sequence[str]) -> tuple[str | None, str]:
    """``(letter, how)``: the option ``answer`` picks among ``options`` (their texts, in letter order), and which
    rule read it (``letter``, ``text``, ``phrase``, ``parentheses``, ``contains``, ``lone_letter``), or
    ``(None, "unparsed")``."""
    letters = LETTERS[: len(options)]
    text = (answer or "").strip()
    if not text:
        return None, "unparsed"
    marked = set(re.findall(r"\(([A-Z])\)", text)) & set(letters)  # "(B)" anywhere
    found = _leading_letter(text, letters)
    if found:
        return (found, "letter") if marked <= {found} else (None, "unparsed")  # "(A) or (B)": ambiguous
    found = _exact_option(text.rstrip("."), options, letters)
    if found:
        return found, "text"
    after, had_phrase = _strip_phrases(text)
    if had_phrase:
        found = _leading_letter(after, letters) or _exact_option(after.rstrip("."), options, letters)
        if found:
            return found, "phrase"
    if len(marked) == 1:
        return marked.pop(), "parentheses"
    if len(marked) > 1:
        return None, "unparsed"
    inside = _options_inside(text, options, letters)
    if len(inside) == 1:
        return inside.pop(), "contains"
    if len(inside) > 1:
        return None, "unparsed"
    lone = {m.group(1) for m in re.finditer(r"(?<![A-Za-z])([A-Z])(?![A-Za-z])", text)
            if m.group(1) in letters and not _article(text[m.start():])}
    if len(lone) == 1:
        return lone.pop(), "lone_letter"
    return None, "unparsed"


_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?"
_NUMBER = r"\d+(?:\.\d+)?"
_RANGE = re.compile(rf"({_CLOCK}|{_NUMBER})\s*(?:s|sec|secs|seconds?)?\s*(?:-|–|—|to|until|and)\s*"
                    rf"({_CLOCK}|{_NUMBER})")


def _seconds(value: str) -> float:
    if ":" not in value:
        return float(value)
    total = 0.0
    for part in value.split(":"):
        total = total * 60 + float(part)
    return total


def span(answer: str) -> tuple[float, float] | None:
    """The first ``(start, end)`` in seconds that ``answer`` names (``24.3 - 30.4``, ``from 2 to 7.5 seconds``,
    ``00:12 - 00:20``), ordered so start <= end; None when it names none."""
    m = _RANGE.search((answer or "").replace(",", " "))
    if m is None:
        return None
    a, b = _seconds(m.group(1)), _seconds(m.group(2))
    return (a, b) if a <= b else (b, a)
