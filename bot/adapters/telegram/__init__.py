"""Telegram: the only package that imports python-telegram-bot.  See adapter.py for the design."""

from bot.adapters.telegram.adapter import TelegramAdapter

__all__ = ["TelegramAdapter"]
