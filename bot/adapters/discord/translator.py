"""Slash-command descriptions in the user's language, from the one message catalogue.

discord.py hands every description to the translator as it syncs; the English text is looked up
among the catalogue's `slash.*` keys, so slash.py keeps plain English and Chinese clients see
Chinese."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.language.messages import CATALOGUE, DEFAULT_LANGUAGE, language_for, t

SLASH_KEYS = {text: key for key, text in CATALOGUE[DEFAULT_LANGUAGE].items() if key.startswith("slash.")}


class CatalogueTranslator(app_commands.Translator):
    async def translate(
        self, string: app_commands.locale_str, locale: discord.Locale, context: app_commands.TranslationContext
    ) -> str | None:
        lang = language_for(locale.value)
        key = SLASH_KEYS.get(string.message)
        if lang == DEFAULT_LANGUAGE or key is None:
            return None
        return t(key, lang)
