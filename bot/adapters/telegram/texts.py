"""The command menu Telegram shows when a user types `/`, from the message catalogue."""

from __future__ import annotations

from bot.language.messages import DEFAULT_LANGUAGE, LANGUAGES, t

COMMANDS = ("draw", "cancel", "history", "show", "quota", "styles", "loras", "settings", "help")


def command_menu(lang: str) -> list[tuple[str, str]]:
    """(command, description) pairs for `setMyCommands`."""
    return [(name, t(f"command.{name}", lang)) for name in COMMANDS]


def menu_languages() -> list[tuple[str, str | None]]:
    """(catalogue language, Telegram language_code): the default menu (None) is English."""
    return [(lang, None if lang == DEFAULT_LANGUAGE else lang) for lang in LANGUAGES]


def unexpected_error(lang: str) -> str:
    """One plain sentence for a failure nobody foresaw (the log has the traceback)."""
    return t("error.unexpected", lang)
