"""Reading answers (lrc/evaluation/answers.py): the option a free-form answer picks, the span it names, and the
answers that name neither, which are counted rather than guessed."""

import pytest

from lrc.evaluation.answers import choice, span

OPTIONS = ["red", "dark red", "blue", "green"]


@pytest.mark.parametrize("answer,letter,how", [
    ("B", "B", "letter"), ("(B)", "B", "letter"), ("B.", "B", "letter"), ("B)", "B", "letter"), ("b", None, None),
    ("C: blue", "C", "letter"), ("(D) green", "D", "letter"), ("  A. red\n", "A", "letter"),
    ("blue", "C", "text"), ("Blue.", "C", "text"), ("dark red", "B", "text"),
    ("The best answer is D", "D", "phrase"), ("Best option: (A)", "A", "phrase"), ("The answer is green.", "D", "phrase"),
    ("I think (C) fits", "C", "parentheses"),
    ("It is a dark red square.", "B", "contains"),  # "red" inside "dark red" is not a second option
    ("It looks blue to me", "C", "contains"),
    ("A circle that moves, so D", "D", "lone_letter"),  # the article A is not an answer
])
def test_choice_reads_letters_texts_and_phrases(answer, letter, how):
    got, rule = choice(answer, OPTIONS)
    if letter is None:
        assert got is None and rule == "unparsed"
    else:
        assert (got, rule) == (letter, how)


@pytest.mark.parametrize("answer", ["", "   ", "I am not sure", "(A) or (B)", "red or blue", "E", "A or B"])
def test_answers_that_name_no_single_option_are_unparsed(answer):
    assert choice(answer, OPTIONS) == (None, "unparsed")


def test_only_the_options_letters_count():
    assert choice("D", ["yes", "no"]) == (None, "unparsed")
    assert choice("B", ["yes", "no"]) == ("B", "letter")


@pytest.mark.parametrize("answer,expected", [
    ("The event happens in 24.3 - 30.4 seconds.", (24.3, 30.4)),
    ("from 2 to 7.5 seconds", (2.0, 7.5)),
    ("00:12 - 01:05", (12.0, 65.0)),
    ("1:00:00 - 1:00:30", (3600.0, 3630.0)),
    ("it starts at 9s – 4s", (4.0, 9.0)),
    ("between 3 and 5", (3.0, 5.0)),
    ("no idea", None), ("at 5 seconds", None), ("", None),
])
def test_span_reads_the_first_range(answer, expected):
    assert span(answer) == (pytest.approx(expected) if expected else None)
