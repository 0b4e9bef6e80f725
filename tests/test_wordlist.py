"""Word lists see through the usual disguises and do not fire on innocent words."""

from __future__ import annotations

import pytest

from bot.community.wordlist import InvalidTerm, WordList, check_term, normalize

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


@pytest.mark.parametrize(
    "text",
    [
        "a neon sign that reads C L A S S I C",  # a listed word inside spelled-out letters
        "letters P A S S I O N",
        "D O C U M E N T S",
        "はかまを着た女性",  # hakama: は is not ば
        "ふすまの部屋",
        "보직 이동",  # Korean syllables stay whole
    ],
)
def test_no_false_positives_inside_spelled_out_words_or_cjk(text):
    assert WordList(["ass", "cum", "ばか", "ぶす", "보지"]).find(text) is None


def test_more_disguises_are_caught():
    words = WordList(["grimdark", "naked", "sex", "s.e.x", "ばか"])
    assert words.find("画一个grimdark女人") == "grimdark"  # a Latin word glued to Chinese
    assert words.find("ΝΑΚΕD statue") == "naked"  # Greek capitals
    assert words.find("SΕΧ") == "sex"
    assert words.find("grim\ufe0fdark") == "grimdark"  # a variation selector
    assert words.find("ばかだ") == "ばか"
    assert WordList(["f u c k"]).find("what the fuck") == "f u c k"  # listed spelled out, found whole
