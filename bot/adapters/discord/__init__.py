"""Discord: the only package that imports discord.py.  See adapter.py for the design."""

from bot.adapters.discord.adapter import DiscordAdapter

__all__ = ["DiscordAdapter"]
