"""What a command handler gets (bot/core/handlers.py): who asked, where to answer, and the parts of the
service it may use.  The service builds one per command; handlers never see the service itself."""

from __future__ import annotations

from dataclasses import dataclass

from bot.community.moderation import Moderator
from bot.community.styles import StyleBook
from bot.contract import Adapter, Caller, Reply, Worker
from bot.core.dispatch import Dispatcher
from bot.core.intake import Intake
from bot.core.members import Members
from bot.core.scheduler import Scheduler
from bot.runtime.metrics import Metrics
from bot.runtime.settings import Settings
from engine.loras import LoraRegistry
from engine.request import ModelProfile
from storage.db import Database
from storage.disk import DiskGuard
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
    disk: DiskGuard | None = None
    loras: LoraRegistry | None = None

    @property
    def is_admin(self) -> bool:
        return self.members.is_admin(self.caller)

    def reply(self, text: str, **extra) -> Reply:
        """An answer in the caller's language."""
        return Reply(text, self.language, **extra)
