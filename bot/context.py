"""What a command handler gets (bot/handlers.py): who asked, where to answer, and the parts of the
service it may use.  The service builds one per command; handlers never see the service itself."""

from __future__ import annotations

from dataclasses import dataclass

from bot.contract import Adapter, Caller, Reply, Worker
from bot.dispatch import Dispatcher
from bot.intake import Intake
from bot.members import Members
from bot.metrics import Metrics
from bot.moderation import Moderator
from bot.scheduler import Scheduler
from bot.settings import Settings
from bot.styles import StyleBook
from engine.request import ModelProfile
from storage.db import Database
from storage.images import ImageStore
from storage.users import User


@dataclass(frozen=True)
class Context:
    # Who asked, and where the answer goes
    caller: Caller
    user: User
    language: str
    reply_to: dict
    idempotency_key: str | None
    # What a handler may use
    settings: Settings
    db: Database
    images: ImageStore
    profile: ModelProfile
    model_name: str
    members: Members
    moderator: Moderator
    styles: StyleBook
    intake: Intake
    scheduler: Scheduler
    dispatcher: Dispatcher
    worker: Worker
    metrics: Metrics
    adapters: dict[str, Adapter]

    @property
    def is_admin(self) -> bool:
        return self.members.is_admin(self.caller)

    def reply(self, text: str, **extra) -> Reply:
        """An answer in the caller's language."""
        return Reply(text, self.language, **extra)
