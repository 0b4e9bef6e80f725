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

import re
import unicodedata
from dataclasses import dataclass

REGEX_PREFIX = "re:"
MAX_TERM_CHARS = 200

# Zero-width and formatting characters that render as nothing, plus the soft hyphen.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]"
)
_LOOKALIKES = str.maketrans(
    {
        "а": "a",
        "е": "e",
        "о": "o",
        "р": "p",
        "с": "c",
        "х": "x",
        "у": "y",
        "і": "i",
        "ј": "j",
        "ѕ": "s",
        "к": "k",
        "м": "m",
        "т": "t",
        "в": "b",
        "н": "h",
        "α": "a",
        "ο": "o",
        "ρ": "p",
        "ι": "i",
        "κ": "k",
        "ν": "v",
        "τ": "t",
        "υ": "u",
    }
)
_CJK = re.compile("[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003ffff]")


class InvalidTerm(ValueError):
    """A term that can never match anything (empty once normalized) or a broken regular expression."""


def normalize(text: str) -> str:
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).casefold()
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    text = text.translate(_LOOKALIKES)
    text = "".join(" " if unicodedata.category(ch)[0] in "PSZC" else ch for ch in text)
    return " ".join(text.split())


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
class _Prepared:
    spaced: str
    joined: str
    runs: list[str]
    compact: str

    @classmethod
    def of(cls, text: str) -> _Prepared:
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


class WordList:
    """A compiled list; `find` says which entry a text trips, or None."""

    def __init__(self, entries: list[str] | tuple[str, ...] = ()) -> None:
        self.entries = tuple(entries)
        words: list[tuple[str, str]] = []  # (normalized, entry)
        self._cjk: list[tuple[str, str]] = []
        self._patterns: list[tuple[re.Pattern[str], str]] = []
        for entry in self.entries:
            try:
                entry = check_term(entry)
            except InvalidTerm:
                continue  # a bad line in a file must not switch the whole list off
            if entry.startswith(REGEX_PREFIX):
                self._patterns.append((re.compile(entry[len(REGEX_PREFIX) :], re.IGNORECASE), entry))
            elif _CJK.search(normalize(entry)):
                self._cjk.append((normalize(entry).replace(" ", ""), entry))
            else:
                words.append((normalize(entry), entry))
        self._by_word = dict(words)
        alternatives = "|".join(re.escape(word) for word, _ in sorted(words, key=lambda pair: -len(pair[0])))
        self._words = re.compile(f"(?:^| )({alternatives})(?:e?s)?(?= |$)") if words else None

    def __bool__(self) -> bool:
        return bool(self._by_word or self._cjk or self._patterns)

    def find(self, *texts: str) -> str | None:
        for text in texts:
            if not text:
                continue
            prepared = _Prepared.of(text)
            if self._words is not None:
                for candidate in (prepared.spaced, prepared.joined):
                    match = self._words.search(candidate)
                    if match:
                        return self._by_word[match[1]]
                for run in prepared.runs:
                    for word, entry in self._by_word.items():
                        if len(word) > 2 and word.replace(" ", "") in run:
                            return entry
            for word, entry in self._cjk:
                if word in prepared.compact:
                    return entry
            for pattern, entry in self._patterns:
                if pattern.search(prepared.spaced) or pattern.search(prepared.joined):
                    return entry
        return None
