"""The command language: a line of chat text -> a typed command, or a `ParseError` that says how to fix it.

One parser serves every platform.  Telegram and the console send whole lines (`/draw a fox --ar 3:2`);
Discord writes its options back into such a line (bot/adapters/discord/slash.py).  Every fixable
drawing error carries an `example` param: the user's own command with every mistake we can fix
fixed, ready to copy.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from bot.language.buttons import Action, parse_button_id
from bot.language.errors import ParseError
from bot.language.text import clip
from engine.errors import InvalidRequest
from engine.loras import MAX_LORAS, MAX_WEIGHT, MIN_WEIGHT
from engine.loras import NAME as LORA_NAME
from engine.request import (
    MAX_CHAOS,
    MAX_SEED,
    DrawRequest,
    ModelProfile,
    clean_text,
    draft_size,
    size_for_ratio,
    validate,
)

# 1. The commands


@dataclass(frozen=True)
class Draw:
    request: DrawRequest
    parent_id: int | None = None  # set for variations of an earlier picture (lineage)
    style: str | None = None  # a preset's name, applied by the service (bot/community/styles.py)


@dataclass(frozen=True)
class Cancel:
    job_id: int | None  # None: the user's latest waiting job


@dataclass(frozen=True)
class History:
    page: int = 1


@dataclass(frozen=True)
class Show:
    job_id: int


@dataclass(frozen=True)
class Quota:
    pass


@dataclass(frozen=True)
class SettingsCmd:
    key: str | None  # None: show all settings
    value: str | None  # None: show this one


@dataclass(frozen=True)
class Help:
    pass


@dataclass(frozen=True)
class Start:
    """Telegram's /start; answered like /help."""


@dataclass(frozen=True)
class Ban:
    target: str
    reason: str


@dataclass(frozen=True)
class Unban:
    target: str


@dataclass(frozen=True)
class SetQuota:
    target: str
    limit: int | None  # None: back to the default for the user's role; 0: unlimited


@dataclass(frozen=True)
class SetRole:
    target: str
    role: str


@dataclass(frozen=True)
class QueueCmd:
    pass


@dataclass(frozen=True)
class Stats:
    pass


@dataclass(frozen=True)
class Styles:
    pass


@dataclass(frozen=True)
class Loras:
    pass


@dataclass(frozen=True)
class LoraReload:
    """`/lora reload` (admins): read the LoRA folder again now."""


@dataclass(frozen=True)
class ButtonPress:
    """A press of one of our buttons (bot/language/buttons.py), checked against the message it was pressed on."""

    action: Action
    job_id: int
    picture: int = 0  # which picture of a batch (0-based)
    message_id: str | None = None  # the message the button was pressed on, in the caller's chat

    @classmethod
    def of(cls, data: str | None, message_id: str | int | None) -> ButtonPress | None:
        """A button id (bot/language/buttons.py) pressed on `message_id`; None for a forged or foreign id."""
        parsed = parse_button_id(data)
        if parsed is None:
            return None
        action, job_id, picture = parsed
        return cls(action, job_id, picture, message_id=None if message_id is None else str(message_id))


@dataclass(frozen=True)
class WordListCmd:
    """`/block add|remove|list [term]` and `/sensitive ...`: this chat's or server's own lists."""

    list_name: str  # "blocked" or "sensitive"
    action: str  # "add", "remove" or "list"
    term: str | None


Command = (
    Draw
    | Cancel
    | History
    | Show
    | Quota
    | SettingsCmd
    | Help
    | Start
    | Ban
    | Unban
    | SetQuota
    | SetRole
    | QueueCmd
    | Stats
    | Styles
    | Loras
    | LoraReload
    | WordListCmd
)

SETTINGS = {"lang": ("en", "zh"), "png": ("on", "off")}  # what /settings may change, and to what

# 2. Draw flags

# Also the order examples write them in.
FLAGS = ("ar", "size", "n", "style", "lora", "seed", "steps", "cfg", "chaos", "strength", "draft", "raw", "no")
KNOWN_FLAGS = ", ".join("--" + name for name in FLAGS)
STRENGTH_RANGE = (0.1, 0.95)  # --strength, for a picture of the user's own
SAMPLE_PROMPT = "a red fox in the snow"
_VALUELESS = frozenset({"raw", "draft"})
_REPEATABLE = frozenset({"lora"})  # their values gather, space separated: `--lora a --lora b:0.5`
# Names people bring from other tools, so an unknown-flag error can point at ours.
_MEANT = {
    "aspect": "ar",
    "ratio": "ar",
    "aspect_ratio": "ar",
    "aspect-ratio": "ar",
    "negative": "no",
    "neg": "no",
    "negative_prompt": "no",
    "negative-prompt": "no",
    "guidance": "cfg",
    "scale": "cfg",
    "count": "n",
    "num": "n",
    "batch": "n",
    "repeat": "n",
    "preset": "style",
    "styles": "style",
    "variety": "chaos",
    "c": "chaos",
    "fast": "draft",
    "preview": "draft",
    "loras": "lora",
    "lycoris": "lora",
}

_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_FLAG_TOKEN = re.compile("([" + _DASHES + "]{1,2})([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?", re.DOTALL)
# [0-9], not \d: \d also matches Arabic-Indic and full-width digits.
_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_RATIO = re.compile(r"([0-9]{1,6})[:\uff1a]([0-9]{1,6})")
_SIZE = re.compile(r"([0-9]{1,6})[xX\u00d7*]([0-9]{1,6})")
_JOB_ID = re.compile(r"[#\uff03]?([0-9]{1,18})")
_PAGE = re.compile(r"[0-9]{1,9}")
# int() refuses strings over 4300 digits; a number this long is out of every range anyway.
_MAX_DIGITS = 30
_SHOWN_CHARS = 40


@dataclass(frozen=True)
class _Flag:
    written: str  # as typed, for messages
    name: str | None  # a known flag, or None
    meant: str | None  # the known flag it most likely means: itself when known, a guess otherwise
    value: str | None


def parse_draw_args(text: str, profile: ModelProfile) -> DrawRequest:
    """Read `a fox --ar 3:2 --no text` into a checked DrawRequest, or raise ParseError.

    Options the user left out stay None (the profile's default), so a variation can keep its
    source's size; everything given has passed `engine.request.validate`.
    """
    return parse_draw(text, profile).request


def parse_draw(text: str, profile: ModelProfile) -> Draw:
    """`parse_draw_args`, plus the style preset named with `--style` (the service knows the presets)."""
    prompt, flags = _lex(clean_text(text))
    _check_lengths(prompt, flags, profile)

    def fail(key: str, **params: object) -> ParseError:
        return ParseError(key, **params, example=_corrected_command(prompt, flags, profile))

    values = _settle(flags, fail)
    if not prompt:
        raise fail("error.prompt_empty")
    request = _build(prompt, values, profile, fail)
    try:
        validate(request, profile)
    except InvalidRequest as error:
        raise fail(error.key, **error.params) from error
    style = values.get("style")
    return Draw(request, style=style.lower() if style else None)


def _flag_token(token: str) -> tuple[str, str | None] | None:
    """(name, inline value) when the token is a flag, else None."""
    match = _FLAG_TOKEN.fullmatch(token)
    if match is None:
        return None
    dashes, name, inline = match.groups()
    name = name.lower()
    if dashes == "--":
        return name, inline
    # Phones turn `--` into `—`, Chinese keyboards type `——`; but a dash before a word is common in
    # prose, so only our own flag names count there.  A single ASCII hyphen never does.
    if dashes != "-" and name in FLAGS:
        return name, inline
    return None


def _lex(text: str) -> tuple[str, list[_Flag]]:
    """Split text into the prompt and its flags, judging nothing yet."""
    tokens = text.split()
    words: list[str] = []
    flags: list[_Flag] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        parsed = _flag_token(token)
        if parsed is None:
            words.append(token)
            continue
        name, inline = parsed
        known = name if name in FLAGS else None
        meant = known or _guess(name)
        values = [inline] if inline else []
        if meant == "no":
            while i < len(tokens) and _flag_token(tokens[i]) is None:
                values.append(tokens[i])
                i += 1
        elif meant not in (None, *_VALUELESS) and not values and i < len(tokens) and _flag_token(tokens[i]) is None:
            values.append(tokens[i])
            i += 1
        flags.append(_Flag(token.split("=", 1)[0], known, meant, " ".join(values) or None))
    return " ".join(words), flags


def _guess(name: str) -> str | None:
    if name in _MEANT:
        return _MEANT[name]
    close = difflib.get_close_matches(name, FLAGS, n=1, cutoff=0.6)
    return close[0] if close else None


def _check_lengths(prompt: str, flags: list[_Flag], profile: ModelProfile) -> None:
    # First, and without an example: an example would repeat the whole oversized text back.
    negative = next((flag.value or "" for flag in flags if flag.name == "no"), "")
    for text in (prompt, negative):
        if len(text) > profile.max_prompt_chars:
            raise ParseError("error.prompt_too_long", length=len(text), limit=profile.max_prompt_chars)


def _settle(flags: list[_Flag], fail: Callable[..., ParseError]) -> dict[str, str | None]:
    """Flag name -> value, once each, or the first structural mistake."""
    values: dict[str, str | None] = {}
    for flag in flags:
        if flag.name is None:
            raise fail("error.unknown_flag", flag=_shown(flag.written), known=KNOWN_FLAGS)
        if flag.name in values and flag.name not in _REPEATABLE:
            raise fail("error.repeated_flag", flag="--" + flag.name)
        if flag.value is None and flag.name not in _VALUELESS:
            raise fail("error.missing_value", flag="--" + flag.name)
        values[flag.name] = _gathered(values.get(flag.name), flag.value) if flag.name in _REPEATABLE else flag.value
    if "ar" in values and "size" in values:
        raise fail("error.flag_conflict", first="--ar", second="--size")
    return values


def _gathered(before: str | None, value: str | None) -> str | None:
    return " ".join(part for part in (before, value) if part) or None


def _loras(text: str, fail: Callable[..., ParseError]) -> tuple[tuple[str, float | None], ...]:
    """`--lora name[:weight]`, up to MAX_LORAS times: a weight left out is the LoRA's own default.
    Whether the name is installed is the service's to judge."""
    loras = []
    for item in text.split():
        name, _, weight_text = item.partition(":")
        if not LORA_NAME.fullmatch(name.lower()):
            raise fail("error.lora_format", value=_shown(item))
        weight = None
        if weight_text:
            weight = _to_float(weight_text)
            if weight is None or not MIN_WEIGHT <= weight <= MAX_WEIGHT:
                raise fail(
                    "error.lora_weight", name=name.lower(), value=_shown(weight_text), min=MIN_WEIGHT, max=MAX_WEIGHT
                )
        loras.append((name.lower(), weight))
    if len(loras) > MAX_LORAS:
        raise fail("error.lora_count", count=len(loras), max=MAX_LORAS)
    return tuple(loras)


def _build(
    prompt: str, values: dict[str, str | None], profile: ModelProfile, fail: Callable[..., ParseError]
) -> DrawRequest:
    fields: dict[str, object] = {}
    # The ranges of --n and --steps are validate()'s to judge.
    if "n" in values:
        fields["count"] = _integer(values, "n", fail)
    if "seed" in values:
        seed = fields["seed"] = _integer(values, "seed", fail)
        # validate() would take -1 as "random"; a typed seed must be a real one.
        if not 0 <= seed <= MAX_SEED:
            raise fail("error.seed_range", value=_shown(values["seed"] or ""), max=MAX_SEED)
    if "steps" in values:
        fields["steps"] = _integer(values, "steps", fail)
    if "chaos" in values:
        fields["chaos"] = _integer(values, "chaos", fail)  # its range is validate()'s
    if "strength" in values:
        fields["strength"] = _strength(values["strength"] or "", fail)
    if "cfg" in values:
        text = values["cfg"] or ""
        cfg = _to_float(text)
        if cfg is None:
            raise fail("error.not_number", flag="--cfg", value=_shown(text))
        fields["cfg"] = cfg
    if "ar" in values:
        text = values["ar"] or ""
        ratio = _to_pair(_RATIO, text)
        if ratio is None:
            raise fail("error.ratio_invalid", ratio=_shown(text))
        try:
            fields["width"], fields["height"] = size_for_ratio(*ratio, profile)
        except InvalidRequest as error:
            raise fail(error.key, **error.params) from error
    if "size" in values:
        text = values["size"] or ""
        size = _to_pair(_SIZE, text)
        if size is None:
            raise fail("error.size_format", value=_shown(text))
        fields["width"], fields["height"] = size
    if "lora" in values:
        fields["loras"] = _loras(values["lora"] or "", fail)
    if "draft" in values:
        fields.update(_draft_fields(fields, profile))
    return DrawRequest(prompt=prompt, negative_prompt=values.get("no") or "", enhance="raw" not in values, **fields)


def _draft_fields(fields: dict[str, object], profile: ModelProfile) -> dict[str, object]:
    """--draft: the size asked for (or the default) at half the side, in the profile's draft steps
    unless --steps says otherwise.  Sized here, once: a stored draft keeps its size on a reroll."""
    width, height = fields.get("width"), fields.get("height")
    if width is None or height is None:
        width, height = profile.default_size
    sized = dict(zip(("width", "height"), draft_size(int(width), int(height), profile), strict=True))
    return {"draft": True, "steps": fields.get("steps", profile.draft_steps), **sized}


def _integer(values: dict[str, str | None], name: str, fail: Callable[..., ParseError]) -> int:
    text = values[name] or ""
    number = _to_int(text)
    if number is None:
        raise fail("error.not_integer", flag="--" + name, value=_shown(text))
    return number


def _strength(text: str, fail: Callable[..., ParseError]) -> float:
    """--strength: how far a picture of the user's own is left behind (used only with one)."""
    strength = _to_float(text)
    if strength is None or not STRENGTH_RANGE[0] <= strength <= STRENGTH_RANGE[1]:
        raise fail("error.strength_flag", value=_shown(text))
    return strength


def _to_int(text: str) -> int | None:
    if not _INTEGER.fullmatch(text):
        return None
    if len(text.lstrip("+-")) > _MAX_DIGITS:
        return -(10**_MAX_DIGITS) if text.startswith("-") else 10**_MAX_DIGITS
    return int(text)


def _to_float(text: str) -> float | None:
    # A pattern, not float(): float() takes "nan", "inf", "1_0" and non-ASCII digits.
    if len(text) > _MAX_DIGITS or not _DECIMAL.fullmatch(text):
        return None
    return float(text)


def _to_pair(pattern: re.Pattern[str], text: str) -> tuple[int, int] | None:
    match = pattern.fullmatch(text)
    return (int(match[1]), int(match[2])) if match else None


def _shown(text: str) -> str:
    """User text echoed in a message, cut so a hostile token cannot flood the chat."""
    return clip(text, _SHOWN_CHARS)


# 3. Examples: the user's command, repaired


def _corrected_command(prompt: str, flags: list[_Flag], profile: ModelProfile) -> str:
    """The user's command with every fixable mistake fixed; `parse` accepts it."""
    values: dict[str, str | None] = {}
    for flag in flags:
        if flag.meant in _REPEATABLE:
            values[flag.meant] = _gathered(values.get(flag.meant), flag.value)
        elif flag.meant and flag.meant not in values:  # unknown flags become their guess, repeats go
            values[flag.meant] = flag.value
    if "ar" in values:
        values.pop("size", None)
    parts = ["/draw", prompt or SAMPLE_PROMPT]
    for name in FLAGS:
        if name not in values:
            continue
        if name in _VALUELESS:
            parts.append("--" + name)
            continue
        value = values[name]
        fixed = _sample(name, profile) if value is None else _REPAIRS[name](value, profile)
        if fixed:
            parts += ["--" + name, fixed]
    return " ".join(parts)


def _sample(name: str, profile: ModelProfile) -> str:
    """A value to show when the user gave none."""
    width, height = profile.default_size
    return {
        "ar": "3:2",
        "size": f"{width}x{height}",
        "seed": "42",
        "steps": str(profile.default_steps),
        "cfg": f"{profile.default_cfg:g}",
        "no": "text, watermark",
        "n": "4",
        "style": "photo",
        "chaos": "50",
        "strength": f"{profile.upload_strength:g}",
        "lora": "",  # no name to suggest: the flag goes
    }[name]


def _repair_ar(value: str, profile: ModelProfile) -> str:
    ratio = _to_pair(_RATIO, value)
    if ratio is None or 0 in ratio:
        return "1:1"
    widest = Fraction(profile.max_ratio).limit_denominator(100)
    if Fraction(*ratio) > widest:
        return f"{widest.numerator}:{widest.denominator}"
    if Fraction(ratio[1], ratio[0]) > widest:
        return f"{widest.denominator}:{widest.numerator}"
    return f"{ratio[0]}:{ratio[1]}"


def _repair_size(value: str, profile: ModelProfile) -> str:
    width, height = _fitting_size(*(_to_pair(_SIZE, value) or profile.default_size), profile)
    return f"{width}x{height}"


def _fitting_size(width: int, height: int, profile: ModelProfile) -> tuple[int, int]:
    """The nearest size the profile accepts: multiples, side limits, pixel budget, then ratio."""
    m = profile.multiple

    def snap(side: int) -> int:
        # Ties round up, so 1000 becomes 1008: the user asked for at least that much.
        return min(profile.max_side, max(profile.min_side, (side + m // 2) // m * m))

    width, height = snap(width), snap(height)
    if width * height > profile.max_pixels:
        scale = math.sqrt(profile.max_pixels / (width * height))
        width = max(profile.min_side, int(width * scale) // m * m)
        height = max(profile.min_side, int(height * scale) // m * m)
    if width > height * profile.max_ratio:
        width = int(height * profile.max_ratio) // m * m
    elif height > width * profile.max_ratio:
        height = int(width * profile.max_ratio) // m * m
    return width, height


def _repair_seed(value: str, profile: ModelProfile) -> str | None:
    seed = _to_int(value)
    return str(seed) if seed is not None and 0 <= seed <= MAX_SEED else None  # None: random


def _repair_steps(value: str, profile: ModelProfile) -> str | None:
    steps = _to_int(value)
    return None if steps is None else str(min(max(steps, profile.min_steps), profile.max_steps))


def _repair_cfg(value: str, profile: ModelProfile) -> str | None:
    cfg = _to_float(value)
    return None if cfg is None else f"{min(max(cfg, profile.min_cfg), profile.max_cfg):g}"


def _repair_count(value: str, profile: ModelProfile) -> str | None:
    count = _to_int(value)
    return None if count is None else str(min(max(count, 1), profile.max_count))


def _repair_strength(value: str, profile: ModelProfile) -> str | None:
    strength = _to_float(value)
    return None if strength is None else f"{min(max(strength, STRENGTH_RANGE[0]), STRENGTH_RANGE[1]):g}"


def _repair_chaos(value: str, profile: ModelProfile) -> str | None:
    chaos = _to_int(value)
    return None if chaos is None else str(min(max(chaos, 0), MAX_CHAOS))


def _repair_lora(value: str, profile: ModelProfile) -> str:
    """Up to MAX_LORAS distinct `name[:weight]`, names cleaned, weights brought into range; several
    come back joined by ` --lora `, so the example repeats the flag."""
    repaired: dict[str, str] = {}
    for item in value.split():
        name, _, weight_text = item.partition(":")
        name = re.sub(r"[^a-z0-9_-]", "", name.lower())[:48]
        if not name or name in repaired:
            continue
        weight = _to_float(weight_text) if weight_text else None
        repaired[name] = name if weight is None else f"{name}:{min(max(weight, MIN_WEIGHT), MAX_WEIGHT):g}"
    return " --lora ".join(list(repaired.values())[:MAX_LORAS])


def _repair_style(value: str, profile: ModelProfile) -> str:
    return value.lower()


def _repair_negative(value: str, profile: ModelProfile) -> str:
    return value if len(value) <= profile.max_prompt_chars else value[: profile.max_prompt_chars].rsplit(" ", 1)[0]


_REPAIRS: dict[str, Callable[[str, ModelProfile], str | None]] = {
    "ar": _repair_ar,
    "size": _repair_size,
    "seed": _repair_seed,
    "steps": _repair_steps,
    "cfg": _repair_cfg,
    "no": _repair_negative,
    "n": _repair_count,
    "style": _repair_style,
    "chaos": _repair_chaos,
    "strength": _repair_strength,
    "lora": _repair_lora,
}

# 4. Slash commands

_USAGE = {
    "cancel": "/cancel #12",
    "history": "/history 2",
    "show": "/show #12",
    "ban": "/ban telegram:12345 spam",
    "unban": "/unban telegram:12345",
    "setquota": "/setquota telegram:12345 20",
    "setrole": "/setrole telegram:12345 trusted",
    "block": "/block add some word",
    "sensitive": "/sensitive add some word",
    "lora": "/lora reload",
}
_QUOTA_WORDS = {"default": None, "reset": None, "unlimited": 0}


def parse(text: str, profile: ModelProfile, bot_username: str | None = None) -> Command | None:
    """Read one line of chat.  Text without a leading slash is a drawing prompt.

    Returns None for a command addressed to another bot (`/draw@otherbot`); raises ParseError.
    """
    text = clean_text(text)
    if not text.startswith(("/", "\uff0f")):
        return parse_draw(text, profile)
    head, _, rest = text[1:].partition(" ")
    name, _, addressee = head.partition("@")
    if addressee and bot_username and addressee.lower() != bot_username.lstrip("@").lower():
        return None
    name = name.lower()
    if name not in _COMMANDS:
        raise ParseError("error.unknown_command", command="/" + _shown(name), example="/help")
    return _COMMANDS[name](rest, profile)


def is_ours(text: str, bot_username: str | None = None) -> bool:
    """Whether a line is one of our commands (not another bot's), judged by its first word alone:
    for those we may not answer at length, e.g. a banned user in a group."""
    words = clean_text(text).split(maxsplit=1)
    if not words or not words[0].startswith(("/", "\uff0f")):
        return False
    name, _, addressee = words[0][1:].partition("@")
    if addressee and bot_username and addressee.lower() != bot_username.lstrip("@").lower():
        return False
    return name.lower() in _COMMANDS


def _usage(command: str) -> ParseError:
    return ParseError("error.usage", command="/" + command, example=_USAGE[command])


def _job_id(token: str, command: str) -> int:
    match = _JOB_ID.fullmatch(token)
    if match is None or int(match[1]) == 0:
        raise ParseError("error.job_id", value=_shown(token), example=_USAGE[command])
    return int(match[1])


def _parse_draw(rest: str, profile: ModelProfile) -> Draw:
    return parse_draw(rest, profile)


def _word_list(list_name: str) -> Callable[[str, ModelProfile], WordListCmd]:
    def parse_list_command(rest: str, profile: ModelProfile) -> WordListCmd:
        command = "block" if list_name == "blocked" else "sensitive"
        action, _, term = rest.strip().partition(" ")
        action, term = action.lower(), term.strip()
        if action in ("add", "remove") and term:
            return WordListCmd(list_name, action, term)
        if action in ("list", ""):
            return WordListCmd(list_name, "list", None)
        raise _usage(command)

    return parse_list_command


def _parse_cancel(rest: str, profile: ModelProfile) -> Cancel:
    args = rest.split()
    if len(args) > 1:
        raise _usage("cancel")
    return Cancel(_job_id(args[0], "cancel") if args else None)


def _parse_history(rest: str, profile: ModelProfile) -> History:
    args = rest.split()
    if len(args) > 1:
        raise _usage("history")
    if not args:
        return History()
    if not _PAGE.fullmatch(args[0]) or int(args[0]) == 0:
        raise ParseError("error.page_number", value=_shown(args[0]), example=_USAGE["history"])
    return History(int(args[0]))


def _parse_show(rest: str, profile: ModelProfile) -> Show:
    args = rest.split()
    if len(args) != 1:
        raise _usage("show")
    return Show(_job_id(args[0], "show"))


def _parse_settings(rest: str, profile: ModelProfile) -> SettingsCmd:
    key, _, value = rest.partition(" ")
    return SettingsCmd(key.lower() or None, value or None)


# Whom admin commands name: `telegram:123`, a bare id, or a Discord mention `<@123>` / `<@!123>`.
TARGET = re.compile(r"(?:([a-z]+):)?([0-9]{1,30})|<@!?([0-9]{1,30})>", re.IGNORECASE)


def is_target(token: str) -> bool:
    """Whether a word names a user the only way admin commands accept: by id, never by name."""
    return TARGET.fullmatch(token.strip()) is not None


def _parse_ban(rest: str, profile: ModelProfile) -> Ban:
    # No target: the person whose message this replies to (the service knows; Telegram).
    target, _, reason = rest.strip().partition(" ")
    return Ban(target, reason.strip())


def _parse_unban(rest: str, profile: ModelProfile) -> Unban:
    args = rest.split()
    if len(args) > 1:
        raise _usage("unban")
    return Unban(args[0] if args else "")


def _parse_setquota(rest: str, profile: ModelProfile) -> SetQuota:
    args = rest.split()
    if len(args) not in (1, 2):
        raise _usage("setquota")
    if len(args) == 1 and (":" in args[0] or args[0].startswith("<@")):
        raise _usage("setquota")  # a user but no limit
    target, word = ("", args[0]) if len(args) == 1 else (args[0], args[1])
    if word.lower() in _QUOTA_WORDS:
        return SetQuota(target, _QUOTA_WORDS[word.lower()])
    if not _PAGE.fullmatch(word):
        raise ParseError("error.quota_value", value=_shown(word), example=_USAGE["setquota"])
    return SetQuota(target, int(word))


def _parse_setrole(rest: str, profile: ModelProfile) -> SetRole:
    args = rest.split()
    if len(args) not in (1, 2):
        raise _usage("setrole")
    if len(args) == 1 and (":" in args[0] or args[0].startswith("<@")):
        raise _usage("setrole")  # a user but no role
    target, role = ("", args[0]) if len(args) == 1 else (args[0], args[1])
    return SetRole(target, role.lower())


def _parse_lora(rest: str, profile: ModelProfile) -> LoraReload:
    if rest.strip().lower() != "reload":
        raise _usage("lora")
    return LoraReload()


# Commands that take no arguments ignore any: Telegram appends a deep-link payload to /start.
_COMMANDS: dict[str, Callable[[str, ModelProfile], Command]] = {
    "draw": _parse_draw,
    "imagine": _parse_draw,  # what Midjourney's users type by habit
    "画": _parse_draw,  # 画 = draw; typed, not in the platforms' command menus (Latin names only)
    "cancel": _parse_cancel,
    "history": _parse_history,
    "show": _parse_show,
    "quota": lambda rest, profile: Quota(),
    "settings": _parse_settings,
    "help": lambda rest, profile: Help(),
    "start": lambda rest, profile: Start(),
    "ban": _parse_ban,
    "unban": _parse_unban,
    "setquota": _parse_setquota,
    "setrole": _parse_setrole,
    "queue": lambda rest, profile: QueueCmd(),
    "stats": lambda rest, profile: Stats(),
    "styles": lambda rest, profile: Styles(),
    "loras": lambda rest, profile: Loras(),
    "lora": _parse_lora,
    "block": _word_list("blocked"),
    "sensitive": _word_list("sensitive"),
}
