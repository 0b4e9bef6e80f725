"""Errors the bot shows to users.  Like the engine's errors, each carries a message key and its
parameters, never prose: `bot.language.messages.t(error.key, lang, **error.params)` says it in the user's
language."""

from __future__ import annotations

from typing import Any


class UserError(Exception):
    """A refusal the user should read: `key` names a catalogue message, `params` fill it in.

    Subclasses with a fixed key are one line (`class QuotaExceeded(UserError): key = "quota_exceeded"`)
    and are raised with params only.  `key` is positional-only so messages may use `{key}` as a
    placeholder (`UserError("settings_saved", key="lang", value="zh")`).
    """

    key = "error.invalid"

    def __init__(self, key: str | None = None, /, **params: Any) -> None:
        self.key = key or self.key
        self.params = params
        super().__init__(f"{self.key} {params}" if params else self.key)


class ParseError(UserError):
    """The command text could not be read; drawing errors carry an `example` that fixes it."""
