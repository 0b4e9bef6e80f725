"""Matching prompts against word lists, seeing through the usual disguises.

Both the prompt and every listed term go through `normalize`: compatibility forms folded (full-width
letters and digits become ASCII), case folded, accents and zero-width characters dropped, a few
Cyrillic and Greek look-alikes mapped to Latin, punctuation turned into spaces.  Runs of single
letters are also read joined up, so `b a d`, `b.a.d` and `b-a-d` all read `bad`, and a term
spelled out inside such a run counts (`a k r a k e n` holds `kraken`).

A plain term matches whole words (with an optional plural `s`/`es`), so `ass` does not match
`class`.  A term with Chinese, Japanese or Korean characters matches anywhere, spaces ignored, as
those languages do not separate words.  A term written `re:<pattern>` is a regular expression
matched against the normalized text (lower case, punctuation as spaces).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass

log = logging.getLogger(__name__)

REGEX_PREFIX = "re:"
MAX_TERM_CHARS = 200

# Variation selectors render as nothing but are not format characters.
_INVISIBLE = re.compile("[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]")
# Look-alikes of Latin letters, mapped before case folding so capitals are caught too.
_LOOKALIKES = str.maketrans(
    dict(
        zip(
            "АВЕКМНОРСТУХаеорсухіјѕкмтвнΑΒΕΖΗΙΚΜΝΟΡΤΥΧαοριкντυ",
            "ABEKMHOPCTYXaeopcyxijskmtbhABEZHIKMNOPTYXaopikvtu",
            strict=True,
        )
    )
)
_CJK = re.compile("[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003ffff]")
# Accents are dropped from Latin, Greek and Cyrillic letters only: elsewhere marks make the letter
# (Japanese voicing marks: は and ば are different words).
_ACCENTED_SCRIPTS_END = 0x0530


class InvalidTerm(ValueError):
    """A term that can never match anything (empty once normalized) or a broken regular expression."""


def normalize(text: str) -> str:
    """Compatibility forms folded, look-alikes mapped, case folded, accents dropped, invisible
    characters removed, punctuation turned into spaces, CJK text set apart from other scripts."""
    text = unicodedata.normalize("NFKC", text).translate(_LOOKALIKES).casefold()
    text = "".join("" if unicodedata.category(ch) == "Cf" else ch for ch in _INVISIBLE.sub("", text))
    kept: list[str] = []
    for ch in unicodedata.normalize("NFD", text):
        if unicodedata.category(ch) in ("Mn", "Me") and kept and ord(kept[-1]) < _ACCENTED_SCRIPTS_END:
            continue
        kept.append(ch)
    text = unicodedata.normalize("NFC", "".join(kept)).translate(_LOOKALIKES)
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)
    return " ".join(_spaced_cjk(text).split())


def _spaced_cjk(text: str) -> str:
    """`a grimdark女人` -> `a grimdark 女人`: a Latin word glued to Chinese is still a word."""
    out: list[str] = []
    previous_cjk: bool | None = None
    for ch in text:
        cjk = bool(_CJK.match(ch)) if not ch.isspace() else None
        if cjk is not None and previous_cjk is not None and cjk != previous_cjk:
            out.append(" ")
        out.append(ch)
        previous_cjk = cjk
    return "".join(out)


def _single_letter_runs(spaced: str) -> tuple[str, list[str]]:
    """`x b a d w o r d here` -> (`xbadword here`, [`xbadword`]): runs of two or more single
    characters joined, and the runs themselves (where spelled-out words hide)."""
    out: list[str] = []
    runs: list[str] = []
    run: list[str] = []
    for token in [*spaced.split(), ""]:
        if len(token) == 1:
            run.append(token)
            continue
        if len(run) > 1:
            runs.append("".join(run))
            out.append(runs[-1])
        else:
            out.extend(run)
        run = []
        out.append(token)
    return " ".join(part for part in out if part), runs


@dataclass(frozen=True)
class Prepared:
    """A text normalized once, to be checked against several lists."""

    spaced: str
    joined: str
    runs: list[str]
    compact: str

    @classmethod
    def of(cls, text: str) -> Prepared:
        spaced = normalize(text)
        joined, runs = _single_letter_runs(spaced)
        return cls(spaced, joined, runs, spaced.replace(" ", ""))


def check_term(term: str) -> str:
    """The term as it will be stored (trimmed), or InvalidTerm saying why it cannot work."""
    term = " ".join(term.split())
    if not term or len(term) > MAX_TERM_CHARS:
        raise InvalidTerm(term)
    if term.lower().startswith(REGEX_PREFIX):
        pattern = term[len(REGEX_PREFIX) :].strip()
        try:
            re.compile(pattern)
        except re.error as error:
            raise InvalidTerm(str(error)) from error
        if not pattern:
            raise InvalidTerm(term)
        return REGEX_PREFIX + pattern
    if not normalize(term):
        raise InvalidTerm(term)
    return term


def term_key(term: str) -> str:
    """What a term stands for once its spelling is set aside: two terms with one key match the
    same prompts (`Teapot` and `ＴＥＡＰＯＴ`; `s.e.x` and `sex`).  A regular expression is its own
    key.  `term` is one that passed `check_term`."""
    if term.startswith(REGEX_PREFIX):
        return term
    return _single_letter_runs(normalize(term))[0]


class WordList:
    """A compiled list; `find` says which entry a text trips, or None."""

    def __init__(self, entries: list[str] | tuple[str, ...] = ()) -> None:
        self.entries = tuple(entries)
        self._by_word: dict[str, str] = {}  # normalized (single letters joined) -> entry
        self._cjk: list[tuple[str, str]] = []
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        for entry in self.entries:
            try:
                entry = check_term(entry)
            except InvalidTerm:
                log.warning(
                    "word list entry %r skipped: it can never match (a regex with a comma belongs in the file)", entry
                )
                continue  # a bad line must not switch the whole list off
            if entry.startswith(REGEX_PREFIX):
                self._patterns.append((re.compile(entry[len(REGEX_PREFIX) :], re.IGNORECASE), entry))
                continue
            word = term_key(entry)
            if _CJK.search(word):
                self._cjk.append((word.replace(" ", ""), entry))
            else:
                self._by_word.setdefault(word, entry)
        alternatives = "|".join(re.escape(word) for word in sorted(self._by_word, key=len, reverse=True))
        self._words = re.compile(f"(?:^| )({alternatives})(?:e?s)?(?= |$)") if self._by_word else None

    def __bool__(self) -> bool:
        return bool(self._by_word or self._cjk or self._patterns)

    def find(self, *texts: str | Prepared) -> str | None:
        for text in texts:
            if not text:
                continue
            prepared = text if isinstance(text, Prepared) else Prepared.of(text)
            found = self._find(prepared)
            if found is not None:
                return found
        return None

    def _find(self, prepared: Prepared) -> str | None:
        if self._words is not None:
            for candidate in (prepared.spaced, prepared.joined):
                match = self._words.search(candidate)
                if match:
                    return self._by_word[match[1]]
            for run in prepared.runs:
                # A spelled-out word is the whole run (`k r a k e n`), perhaps after an article
                # (`a k r a k e n`) or with a plural: never a piece of one (`C L A S S I C`).
                for candidate in _run_readings(run):
                    if candidate in self._by_word:
                        return self._by_word[candidate]
        for word, entry in self._cjk:
            if word in prepared.compact:
                return entry
        for pattern, entry in self._patterns:
            if pattern.search(prepared.spaced) or pattern.search(prepared.joined):
                return entry
        return None


def _run_readings(run: str) -> list[str]:
    readings = [run, run[1:]] if run[0] in "ai" and len(run) > 3 else [run]
    plurals = [r[: -len(suffix)] for r in readings for suffix in ("es", "s") if r.endswith(suffix) and len(r) > 3]
    return readings + plurals
