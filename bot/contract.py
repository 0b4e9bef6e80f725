"""What adapters and the service say to each other: who is talking, what to answer, what to send,
and the three calls every chat platform implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from storage.jobs import Job


@dataclass(frozen=True)
class Caller:
    """Who is talking, and where: what every adapter knows about an incoming event."""

    platform: str
    user_id: str
    name: str | None = None
    language: str | None = None
    chat_id: str | None = None
    guild_id: str | None = None
    nsfw_channel: bool | None = None  # an age-restricted channel; None where the platform has none
    chat_admin: bool = False  # may manage this chat or server (edits its word lists)
    public: bool = False  # what we answer here is read by the whole chat (a Telegram group)
    replied_user_id: str | None = None  # the sender of the message this one replies to (admin commands' target)


@dataclass(frozen=True)
class Reply:
    """What the adapter should say back.  `alert` = show privately (ephemeral / callback alert)."""

    text: str
    language: str = "en"
    job_id: int | None = None
    alert: bool = False
    delete_message: bool = False


@dataclass(frozen=True)
class Delivery:
    """A finished job's pictures (one, or a batch), ready to send.  `buttons` are rows of
    (button id, label); `spoiler` asks the platform to hide the pictures until clicked."""

    job: Job
    image_paths: list[Path]
    caption: str
    buttons: list[list[tuple[str, str]]]
    language: str
    send_png: bool = False
    notes: list[str] = field(default_factory=list)
    spoiler: bool = False


class Undeliverable(Exception):
    """The platform will never take this outcome (bot blocked or removed, chat gone, no permission):
    adapters raise it so the service gives the delivery up at once (bot/delivery.py); a drawn
    picture is not refunded for it.  Anything else an adapter raises is retried, a bounded number
    of times."""


class Adapter(Protocol):
    platform: str

    async def show_status(self, job: Job, text: str) -> None:
        """Progress or position; may be skipped under rate limits."""

    async def deliver(self, delivery: Delivery) -> None:
        """Send the picture; raise if it did not go out (it will be retried)."""

    async def notify_failure(self, job: Job, text: str) -> None:
        """Tell the owner their job failed; raise if it did not go out."""
