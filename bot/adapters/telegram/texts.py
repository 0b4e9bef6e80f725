"""Words the adapter needs that the message catalogue does not hold yet.

The command menu Telegram shows when a user types `/` reads `command.<name>` keys, and the apology
for an unexpected failure reads `error.unexpected`, whenever the catalogue has them; until it does,
the stand-ins below are used, so a user never sees a raw key.
"""

from __future__ import annotations

from bot.messages import CATALOGUE, DEFAULT_LANGUAGE, LANGUAGES, t

COMMANDS = ("draw", "cancel", "history", "show", "quota", "settings", "help")

_STAND_INS = {
    "en": {
        "command.draw": "Draw a picture: /draw a fox in the snow --ar 3:2",
        "command.cancel": "Cancel a picture that is still waiting",
        "command.history": "Your pictures",
        "command.show": "The details of one picture: /show #12",
        "command.quota": "Pictures left today",
        "command.settings": "Language and PNG files",
        "command.help": "How to draw, with examples",
    },
    "zh": {
        "command.draw": "画一张图：/draw 雪地里的狐狸 --ar 3:2",
        "command.cancel": "取消还在排队的图",
        "command.history": "你的作品",
        "command.show": "查看某张图的详情：/show #12",
        "command.quota": "今天还能画几张",
        "command.settings": "语言和 PNG 原图",
        "command.help": "画图方法和示例",
    },
}


def _text(key: str, lang: str) -> str:
    table = CATALOGUE.get(lang, CATALOGUE[DEFAULT_LANGUAGE])
    stand_ins = _STAND_INS.get(lang, _STAND_INS[DEFAULT_LANGUAGE])
    return table.get(key) or stand_ins[key]


def command_menu(lang: str) -> list[tuple[str, str]]:
    """(command, description) pairs for `setMyCommands`."""
    return [(name, _text(f"command.{name}", lang)) for name in COMMANDS]


def menu_languages() -> list[tuple[str, str | None]]:
    """(catalogue language, Telegram language_code): the default menu (None) is English."""
    return [(lang, None if lang == DEFAULT_LANGUAGE else lang) for lang in LANGUAGES]


def unexpected_error(lang: str) -> str:
    """One plain sentence for a failure nobody foresaw (the log has the traceback)."""
    if "error.unexpected" in CATALOGUE[DEFAULT_LANGUAGE]:
        return t("error.unexpected", lang)
    return t("error.engine", lang)
