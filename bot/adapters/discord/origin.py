"""Where a job came from on Discord: what `job.reply_to` keeps so that even a restarted bot can answer.

An interaction gives a webhook token that lives 15 minutes; a message (a reply to one of our
pictures) gives a channel and a message to reply to.  Ids are stored as strings (JSON-safe).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import discord

DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024
# Discord lets a token act for 15 minutes; stop a minute early so a slow upload still makes it.
TOKEN_LIFETIME_S = 14 * 60
ORIGINAL = "@original"


@dataclass(frozen=True)
class Origin:
    channel_id: str
    user_id: str
    mention: str
    guild_id: str | None = None
    attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT
    application_id: str | None = None
    interaction_id: str | None = None
    token: str | None = None
    created: float | None = None  # when the interaction was made, unix seconds
    message_id: str | None = None  # the user's message, for the reply-to-a-picture path
    status_message_id: str | None = None  # set through service.attach_status_message

    @classmethod
    def from_interaction(cls, interaction: discord.Interaction) -> Origin:
        return cls(
            channel_id=str(interaction.channel_id),
            guild_id=_str(interaction.guild_id),
            user_id=str(interaction.user.id),
            mention=interaction.user.mention,
            attachment_size_limit=int(interaction.filesize_limit or DEFAULT_ATTACHMENT_LIMIT),
            application_id=str(interaction.application_id),
            interaction_id=str(interaction.id),
            token=interaction.token,
            created=interaction.created_at.timestamp(),
        )

    @classmethod
    def from_message(cls, message: discord.Message) -> Origin:
        guild = message.guild
        # Without the guilds cache the channel is a PartialMessageable that still knows its guild.
        guild_id = guild.id if guild else getattr(message.channel, "guild_id", None)
        return cls(
            channel_id=str(message.channel.id),
            guild_id=_str(guild_id),
            user_id=str(message.author.id),
            mention=message.author.mention,
            attachment_size_limit=guild.filesize_limit if guild else DEFAULT_ATTACHMENT_LIMIT,
            message_id=str(message.id),
        )

    @classmethod
    def from_reply_to(cls, reply_to: dict[str, Any]) -> Origin:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in reply_to.items() if k in known})

    def to_reply_to(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def token_alive(self, now: float) -> bool:
        """The interaction webhook still works (with a minute to spare)."""
        return self.token is not None and self.created is not None and now - self.created < TOKEN_LIFETIME_S


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)
