"""What the parts of the bot say to each other: who is talking, what to answer, what to send; the
three calls every chat platform implements (`Adapter`), the calls adapters make on the service
(`ChatService`), and what the service needs from whatever draws (`Worker`: one GPU thread in this
process, or a pool of `easel worker` processes)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from storage.jobs import Job

if TYPE_CHECKING:
    from bot.community.styles import StyleBook
    from bot.runtime.settings import Settings
    from engine.loras import LoraRegistry
    from engine.request import DrawRequest, ModelProfile
    from engine.result import Result
    from storage.db import Database
    from storage.users import User

ProgressCallback = Callable[[int, int], None]  # (step, total), called on the event loop


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


@dataclass(frozen=True)
class Upload:
    """A picture someone brought: the size the platform reports (None: unknown) and how to fetch it."""

    size: int | None
    fetch: Callable[[], Awaitable[bytes]]


class Undeliverable(Exception):
    """The platform will never take this outcome (bot blocked or removed, chat gone, no permission):
    adapters raise it so the service gives the delivery up at once (bot/core/delivery.py); a drawn
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

    # Optional: an adapter without it cannot reach admins privately (the core checks with getattr).
    async def tell_admin(self, user_id: str, text: str) -> bool:
        """A private message to a bot admin (EASEL_ADMINS `platform:user_id`); True when it went out."""


class ChatService(Protocol):
    """What adapters call on the service (bot/core/service.py).  Replies come back as `Reply`; None means
    the text was not meant for this bot, and nothing is said."""

    settings: Settings
    profile: ModelProfile
    styles: StyleBook
    db: Database  # adapters read jobs only (their status message, whether a job has settled)

    async def handle_text(
        self,
        caller: Caller,
        text: str,
        reply_to: dict,
        idempotency_key: str | None = None,
        bot_username: str | None = None,
        shared_chat: bool = False,
    ) -> Reply | None:
        """A line of the command language."""

    async def press(
        self, caller: Caller, data: str, reply_to: dict, idempotency_key: str | None = None, *, message_id: str | None
    ) -> Reply:
        """A button press on `message_id`; `data` is the button id (bot/language/buttons.py)."""

    async def vary_from_picture(
        self,
        caller: Caller,
        text: str,
        chat_id: str,
        message_id: str,
        reply_to: dict,
        idempotency_key: str | None,
        bot_username: str | None = None,
    ) -> Reply | None:
        """A reply with new words to one of our pictures."""

    async def draw_from_upload(
        self,
        caller: Caller,
        text: str,
        upload: Upload,
        reply_to: dict,
        idempotency_key: str | None,
        bot_username: str | None = None,
    ) -> Reply | None:
        """/draw words with a picture of the user's own (a caption, a reply to it, an attachment)."""

    def lora_names(self) -> list[str]:
        """The installed LoRA names, sorted (Discord's autocomplete); cheap, never raises."""

    async def language_of(self, caller: Caller) -> str:
        """The caller's language, without creating a user row."""

    async def user_for(self, caller: Caller) -> User:
        """The caller's user row, created on first sight."""

    async def attach_status_message(self, job_id: int, **where: Any) -> None:
        """Remember where the job's status message is, so progress edits find it."""

    async def record_message(
        self, job_id: int, platform: str, chat_id: str, message_id: str, picture: int = 0, whole_batch: bool = False
    ) -> None:
        """Remember a posted message of a job: replies and presses are honoured only there."""

    async def messages_of(self, job_id: int, platform: str) -> list[tuple[str, str]]:
        """Every (chat, message) posted for a job."""


class Worker(Protocol):
    """What draws: `bot.runtime.worker.GpuWorker` (one GPU thread here) or `bot.scale.pool.WorkerPool`."""

    # Whether a stopping service must cancel running jobs (they run again after the restart).
    cancel_on_shutdown: bool
    # Whether the engine runs in this process: a LoRA that fails to load here is bad for everyone;
    # one that fails on a remote worker may be that worker's own problem (its worker stops offering it).
    loads_here: bool
    # The bot's installed LoRAs, set by the service: with workers, the files theirs must match.
    loras: LoraRegistry | None

    async def start(self) -> None:
        """Get ready (load the model, or start watching the workers); may fail and be retried."""

    async def acquire_slot(self) -> None:
        """Wait until a job can start at once; the dispatcher takes the next job only then."""

    def release_slot(self) -> None:
        """The slot taken by `acquire_slot` is free again."""

    async def run(self, job_id: int, request: DrawRequest, on_step: ProgressCallback | None = None) -> Result:
        """Draw; raises what `engine.generate` raises (bot/runtime/worker.py `failure_of` reads it)."""

    def cancel(self, job_id: int) -> bool:
        """Stop a running job within a step; False if this worker is not running it."""

    def healthy(self) -> bool:
        """False while what draws cannot be reached (scale-out: Redis is down)."""

    def live_workers(self) -> int:
        """How many workers can take jobs now."""

    def recipes(self) -> dict[str, int]:
        """How many live workers run each weights recipe (none, int8, int4: engine/quantize.py)."""

    async def missing_loras(self, loras: tuple) -> list[str]:
        """The names of a job's LoRAs that keep every live worker from drawing it; [] when one can."""

    async def close(self) -> None:
        """Stop for good."""
