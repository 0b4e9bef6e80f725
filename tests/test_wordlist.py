"""Word lists see through the usual disguises and do not fire on innocent words."""

from __future__ import annotations

import pytest

from bot.wordlist import InvalidTerm, WordList, check_term, normalize

LIST = WordList(["badword", "ass", "坏词", "re:b[a4]d+ c[a4]t", "two words", "Crème"])


@pytest.mark.parametrize(
    "text",
    [
        "a BADWORD here",
        "ａ ｂａｄｗｏｒｄ",  # full width
        "bad\u200bword",  # zero-width space
        "bad\u00adword",  # soft hyphen
        "b a d w o r d in the snow",  # spaced out
        "a b a d w o r d",  # spaced out after an article
        "b.a.d.w.o.r.d",
        "b-a-d-w-o-r-d",
        "b_a_d_w_o_r_d",
        "bаdwоrd",  # Cyrillic а and о
        "badwords",  # plural
        "BADWORD!!!",
    ],
)
def test_disguised_spellings_are_caught(text):
    assert LIST.find(text) == "badword"


@pytest.mark.parametrize(
    "text", ["a classy fox", "passage of time", "bad word", "badwordsmith", "class act", "a s k me", "i a m"]
)
def test_innocent_words_pass(text):
    assert LIST.find(text) is None


def test_chinese_terms_match_inside_text_and_across_spaces():
    assert LIST.find("画一个坏词的图") == "坏词"
    assert LIST.find("坏 词") == "坏词"
    assert LIST.find("好词") is None


def test_regex_and_phrase_and_accent_entries():
    assert LIST.find("a B4DDD CAT") == "re:b[a4]d+ c[a4]t"
    assert LIST.find("Two   WORDS, please") == "two words"
    assert LIST.find("creme brulee") == "Crème"
    assert LIST.find("nothing", "", "the negative has badword") == "badword"


def test_terms_are_checked_before_they_are_stored():
    assert check_term("  some   word ") == "some word"
    assert check_term("RE: fo+") == "re:fo+"
    for bad in ("", "   ", "!!!", "re:(", "re:", "x" * 201):
        with pytest.raises(InvalidTerm):
            check_term(bad)
    # A broken line in a file does not disable the list.
    assert WordList(["re:(", "fox"]).find("a fox") == "fox"
    assert not WordList([]) and WordList(["fox"])


def test_normalize_folds_width_case_accents_and_punctuation():
    assert normalize("Ｈｅｌｌｏ,  Wörld!\u200b") == "hello world"
