"""The Discord adapter: slash commands, buttons and replies to pictures in; status, pictures and
failures out.  It translates; the service decides.

Visibility, fixed at defer time: every interaction is deferred first (ephemeral "thinking"), so what
the service says back (queued, progress, refusals, /quota, ...) is seen only by the person who asked.
Outcomes are public: the picture (or the failure) is a new message that mentions the owner, sent
as an interaction follow-up while the token lives and as a plain channel message after that.  The
private status message is then deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands

from bot.adapters.discord.buttons import ResultButton, result_view
from bot.adapters.discord.fitting import fit_to_limit
from bot.adapters.discord.origin import ORIGINAL, Origin
from bot.adapters.discord.slash import build_commands
from bot.adapters.discord.translator import CatalogueTranslator
from bot.contract import Caller, ChatService, Delivery, Reply, Undeliverable, Upload
from bot.language.buttons import TEMPLATE
from bot.language.messages import language_for, t
from bot.language.text import clip
from bot.runtime.settings import Settings
from storage.jobs import Job

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 2000
READY_TIMEOUT_S = 30.0
ANSWER_TIMEOUT_S = 10.0  # how long an outcome waits for the command's own answer to land first
STATUS_EDIT_TIMEOUT_S = 5.0  # progress is best-effort: a rate-limited edit is dropped, not waited for
# Missing Access, Missing Permissions, Unknown Channel, archived thread: retrying cannot help.
NEVER_DELIVERABLE = {50001, 50013, 10003, 50083}
# Request entity too large, Invalid Form Body: the message itself is refused, wherever it is posted.
BODY_REFUSED = {40005, 50035}
TOKEN_DEAD = 50027  # "Invalid Webhook Token": the 15 minutes are over
# What one message's files may add up to (commonly reported as 25 MiB; boosted servers raise the
# per-file limit, and the budget with it).
MESSAGE_UPLOAD_BUDGET = 25 * 1024 * 1024
MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)

Ask = Callable[[Caller, dict[str, Any]], Awaitable[Reply | None]]


class EaselTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        """A command this run does not know (an old version's, or one synced elsewhere) gets a short
        private answer instead of Discord's "This interaction failed"."""
        unknown = isinstance(error, app_commands.CommandNotFound | app_commands.CommandSignatureMismatch)
        if unknown and interaction.type is discord.InteractionType.application_command:
            await _answer_stale(interaction, "unknown_slash_command")
            return
        await super().on_error(interaction, error)


class EaselClient(discord.Client):
    def __init__(self, adapter: DiscordAdapter, intents: discord.Intents) -> None:
        super().__init__(intents=intents, allowed_mentions=MENTIONS)
        self.adapter = adapter
        self.tree = EaselTree(self)

    async def setup_hook(self) -> None:
        await self.adapter.setup()

    async def on_easel_press(self, interaction: discord.Interaction, custom_id: str) -> None:
        await self.adapter.on_press(interaction, custom_id)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """A component no template of ours matches (a forged id, an old version's button) would
        otherwise go unanswered, and Discord would say "This interaction failed"."""
        if interaction.type is not discord.InteractionType.component:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        # discord.py drops, unanswered, a press whose id the message does not carry.
        if not re.fullmatch(TEMPLATE, custom_id) or not _carries(interaction.message, custom_id):
            await _answer_stale(interaction, "stale_button")

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)


class DiscordAdapter:
    platform = "discord"

    def __init__(self, service: ChatService, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.settings = settings
        self.clock = clock
        self.client = EaselClient(self, _intents(settings))
        self._ready = asyncio.Event()  # logged in; also set by close() to wake whoever waits
        self._closed = False
        self._answering: dict[str, asyncio.Event] = {}  # interaction token -> its answer has landed
        self._status: dict[int, tuple[Origin, str] | None] = {}  # job -> newest status not yet shown

    # -- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Log in, sync the commands, stay connected; returns once closed."""
        if self.settings.discord_token is None:
            raise RuntimeError("DISCORD_TOKEN is not set")
        try:
            await self.client.start(self.settings.discord_token.get_secret_value())
        finally:
            await self.close()

    async def close(self) -> None:
        self._closed = True
        self._ready.set()
        if not self.client.is_closed():
            await self.client.close()

    async def setup(self) -> None:
        """Buttons of any age, the commands, and their sync: per guild when DISCORD_GUILD_IDS is set."""
        self.client.add_dynamic_items(ResultButton)
        tree = self.client.tree
        await tree.set_translator(CatalogueTranslator())
        styles = [style.name for style in self.service.styles.all()]
        for command in build_commands(self.service.profile, self.on_command, styles, self.service.lora_names):
            tree.add_command(command)
        try:
            if self.settings.discord_guild_ids:
                for guild_id in self.settings.discord_guild_ids:
                    guild = discord.Object(id=guild_id)
                    tree.copy_global_to(guild=guild)
                    await tree.sync(guild=guild)
            else:
                await tree.sync()
        except discord.HTTPException:
            log.exception("syncing the slash commands failed; Discord keeps the last synced set")
        self._ready.set()

    # -- events in ------------------------------------------------------------------------------

    async def on_command(self, interaction: discord.Interaction, text: str, image: discord.Attachment = None) -> None:
        """A slash command, already written as a command line; /draw's picture, if one is attached."""
        key = f"discord:interaction:{interaction.id}"
        if image is not None:
            upload = _upload_of(image)
            await self._answer(
                interaction, lambda caller, reply_to: self.service.draw_from_upload(caller, text, upload, reply_to, key)
            )
            return
        await self._answer(
            interaction, lambda caller, reply_to: self.service.handle_text(caller, text, reply_to, idempotency_key=key)
        )

    async def on_press(self, interaction: discord.Interaction, custom_id: str) -> None:
        """A button under a picture, from this run or any earlier one."""
        key = f"discord:interaction:{interaction.id}"
        pressed_on = str(interaction.message.id) if interaction.message is not None else None
        await self._answer(
            interaction,
            lambda caller, reply_to: self.service.press(
                caller, custom_id, reply_to, idempotency_key=key, message_id=pressed_on
            ),
        )

    async def on_message(self, message: discord.Message) -> None:
        """A message that mentions us: with an image, /draw from it; in reply to one of our pictures,
        a variation with the new words."""
        me = self.client.user
        if not self.settings.discord_message_content or me is None or message.author.bot:
            return
        reference = message.reference
        image = next((a for a in message.attachments if (a.content_type or "").startswith("image/")), None)
        replied = reference is not None and reference.message_id is not None
        if (image is None and not replied) or all(user.id != me.id for user in message.mentions):
            return
        origin = Origin.from_message(message)
        caller = _caller(origin, message.author, message.channel)
        text = re.sub(rf"<@!?{me.id}>", " ", message.content).strip()
        key = f"discord:message:{message.id}"
        if image is not None:
            reply = await self.service.draw_from_upload(caller, text, _upload_of(image), origin.to_reply_to(), key)
        else:
            reply = await self.service.vary_from_picture(
                caller, text, origin.channel_id, str(reference.message_id), origin.to_reply_to(), idempotency_key=key
            )
        if reply is None:
            return
        answer = await message.reply(
            _clip(reply.text), mention_author=False, allowed_mentions=discord.AllowedMentions.none()
        )
        if reply.job_id is not None:
            await self.service.attach_status_message(reply.job_id, status_message_id=str(answer.id))

    async def _answer(self, interaction: discord.Interaction, ask: Ask) -> None:
        """Defer first (Discord's 3 seconds), then ask the service and show its reply privately."""
        try:
            await interaction.response.defer(ephemeral=True, thinking=True)
        except discord.HTTPException:
            log.warning("interaction %s could not be deferred; dropped", interaction.id, exc_info=True)
            return
        origin = Origin.from_interaction(interaction)
        landed = self._answering[interaction.token] = asyncio.Event()
        try:
            try:
                reply = await ask(_interaction_caller(interaction, origin), origin.to_reply_to())
            except Exception:
                log.exception("interaction %s: the service failed", interaction.id)
                reply = Reply(t("error.unexpected", language_for(str(interaction.locale))), alert=True)
            await self._show_reply(interaction, reply)
        except discord.HTTPException:
            log.warning("interaction %s: could not show the reply", interaction.id, exc_info=True)
        finally:
            landed.set()
            self._answering.pop(interaction.token, None)

    async def _show_reply(self, interaction: discord.Interaction, reply: Reply | None) -> None:
        if reply is None:  # not meant for us
            await interaction.delete_original_response()
            return
        text = reply.text
        if reply.delete_message and interaction.message is not None and not await _delete_quietly(interaction.message):
            text = t("delete_message_failed", reply.language)  # the files are gone; say the post is not
        await interaction.edit_original_response(content=_clip(text))
        if reply.job_id is not None:
            await self.service.attach_status_message(reply.job_id, status_message_id=ORIGINAL)

    # -- the Adapter protocol: out --------------------------------------------------------------

    async def show_status(self, job: Job, text: str) -> None:
        """Edit the status message; newest text wins, and a slow or refused edit is skipped."""
        origin = Origin.from_reply_to(job.reply_to)
        if origin.status_message_id is None or self._closed or not self._ready.is_set():
            return
        if origin.status_message_id == ORIGINAL and not origin.token_alive(self.clock()):
            return
        if job.id in self._status:  # an edit is under way; it sends this text next
            self._status[job.id] = (origin, text)
            return
        self._status[job.id] = (origin, text)
        try:
            while (latest := self._status[job.id]) is not None:
                self._status[job.id] = None
                try:
                    await asyncio.wait_for(self._edit_status(*latest), STATUS_EDIT_TIMEOUT_S)
                except (discord.HTTPException, TimeoutError) as error:
                    log.debug("job %s: status edit skipped (%s)", job.id, error)
        finally:
            self._status.pop(job.id, None)

    async def deliver(self, delivery: Delivery) -> None:
        """The picture (or a batch's pictures), its caption and buttons, as a message that mentions
        the owner; raises if unsent.  Sensitive pictures go as spoiler attachments, which an embed
        image cannot be."""
        job, lang = delivery.job, delivery.language
        origin = Origin.from_reply_to(job.reply_to)
        await self._wait_until_answered(origin)
        # Each file has the per-file limit, and a batch shares one message's budget.
        per_file = origin.attachment_size_limit
        if len(delivery.image_paths) > 1:
            per_file = min(per_file, max(MESSAGE_UPLOAD_BUDGET, per_file) // len(delivery.image_paths))
        uploads = [await asyncio.to_thread(fit_to_limit, path, per_file) for path in delivery.image_paths]
        single = len(uploads) == 1
        names = [
            f"easel-{job.id}.{upload.extension}" if single else f"easel-{job.id}-{index + 1}.{upload.extension}"
            for index, upload in enumerate(uploads)
        ]
        reencoded = any(upload.reencoded for upload in uploads)
        notes = [*delivery.notes, *([t("oversize_note", lang)] if reencoded else [])]
        # Prompts are user text: no masked links or headings under the bot's name.
        caption = discord.utils.escape_markdown(delivery.caption)
        embed = discord.Embed(description="\n\n".join([caption, *notes]))
        if single and not delivery.spoiler:
            embed.set_image(url=f"attachment://{names[0]}")

        def parts() -> dict[str, Any]:
            files = [
                discord.File(io.BytesIO(upload.data), filename=name, spoiler=delivery.spoiler)
                for upload, name in zip(uploads, names, strict=True)
            ]
            return {"files": files, "embed": embed, "view": result_view(delivery.buttons)}

        late = t("token_expired_mention", lang, mention=origin.mention)
        message = await self._post(origin, origin.mention, late, parts)
        # The picture is out: nothing below may raise, or the service would send it again.
        try:
            await self.service.record_message(
                job.id, self.platform, origin.channel_id, str(message.id), whole_batch=not single
            )
        except Exception:
            log.exception("job %s: could not record its message", job.id)
        await self._clear_status(origin)

    async def notify_failure(self, job: Job, text: str) -> None:
        """The failure, told to the owner the same way a picture would be; raises if unsent."""
        origin = Origin.from_reply_to(job.reply_to)
        await self._wait_until_answered(origin)
        content = _clip(f"{origin.mention} {text}")
        await self._post(origin, content, content, lambda: {})
        with contextlib.suppress(Exception):
            await self._clear_status(origin)

    async def tell_admin(self, user_id: str, text: str) -> bool:
        """A direct message to a bot admin; False (logged) when it did not go out."""
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
            if self._closed:
                raise RuntimeError("the Discord adapter is closed")
            channel = await self.client.create_dm(discord.Object(id=int(user_id)))  # cached after the first
            await channel.send(_clip(text))
        except Exception as error:  # DMs closed, an unknown id, not logged in
            log.warning("discord: message to admin %s not sent: %s", user_id, error)
            return False
        return True

    # -- sending ----------------------------------------------------------------------------------

    async def _post(
        self, origin: Origin, content: str, late_content: str, parts: Callable[[], dict[str, Any]]
    ) -> discord.Message:
        """A follow-up while the interaction token lives, else (or when Discord says it died) a channel
        message; a job from a message replies to that message.  A refused follow-up raises (tried again
        later, and after 15 minutes in the channel); a channel the bot may not post in, or that is gone,
        is Undeliverable, and so is a message refused as too large or malformed, wherever it goes;
        5xx and timeouts raise as they are."""
        if origin.token_alive(self.clock()):
            try:
                webhook = self._webhook(origin)
                return await webhook.send(content=content, wait=True, allowed_mentions=MENTIONS, **parts())
            except discord.HTTPException as error:
                if error.code in BODY_REFUSED:
                    raise _undeliverable(origin, error) from error
                if not _token_dead(error):
                    raise
                log.info("interaction token dead (%s %s); posting to the channel", error.status, error.code)
        if origin.token is None:
            late_content = content
        reference = None
        if origin.message_id is not None:
            reference = discord.MessageReference(
                message_id=int(origin.message_id), channel_id=int(origin.channel_id), fail_if_not_exists=False
            )
        try:
            return await self._channel(origin).send(
                content=late_content, reference=reference, allowed_mentions=MENTIONS, **parts()
            )
        except discord.HTTPException as error:
            if _never_deliverable(error):
                raise _undeliverable(origin, error) from error
            raise

    async def _edit_status(self, origin: Origin, text: str) -> None:
        await self._wait_until_answered(origin)
        if origin.status_message_id == ORIGINAL:
            await self._webhook(origin).edit_message(ORIGINAL, content=_clip(text))  # type: ignore[arg-type]
        else:
            await self._channel(origin).get_partial_message(int(origin.status_message_id)).edit(content=_clip(text))

    async def _clear_status(self, origin: Origin) -> None:
        """The private status message has done its job once the outcome is out."""
        status = origin.status_message_id
        if status is None:
            return
        with contextlib.suppress(discord.HTTPException):
            if status != ORIGINAL:
                await self._channel(origin).get_partial_message(int(status)).delete()
            elif origin.token_alive(self.clock()):
                await self._webhook(origin).delete_message(ORIGINAL)  # type: ignore[arg-type]

    async def _wait_until_answered(self, origin: Origin) -> None:
        """Wait for the client to be logged in, and for the command's own reply to land, so an outcome
        never replaces the 'thinking' message (which would make it private)."""
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_S)
        except TimeoutError:
            raise RuntimeError("not logged in to Discord yet") from None
        if self._closed:
            raise RuntimeError("the Discord adapter is closed; the job stays undelivered until the next start")
        landed = self._answering.get(origin.token or "")
        if landed is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(landed.wait(), ANSWER_TIMEOUT_S)

    def _webhook(self, origin: Origin) -> discord.Webhook:
        return discord.Webhook.partial(int(origin.application_id or 0), origin.token or "", client=self.client)

    def _channel(self, origin: Origin) -> discord.PartialMessageable:
        guild_id = int(origin.guild_id) if origin.guild_id else None
        return self.client.get_partial_messageable(int(origin.channel_id), guild_id=guild_id)


def _upload_of(attachment: discord.Attachment) -> Upload:
    """An attachment as the service takes it: the size Discord reports, fetched from its URL on demand."""
    return Upload(attachment.size, attachment.read)


def _intents(settings: Settings) -> discord.Intents:
    """Interactions need no intent; reading replies to pictures needs message content."""
    intents = discord.Intents.none()
    intents.guilds = True
    if settings.discord_message_content:
        intents.guild_messages = intents.dm_messages = intents.message_content = True
    return intents


def _caller(
    origin: Origin, user: discord.abc.User, channel: object, locale: object = None, chat_admin: bool = False
) -> Caller:
    """Who is talking and where, from a message or an interaction (`Origin` has the ids)."""
    return Caller(
        "discord",
        origin.user_id,
        name=user.name,
        language=str(locale) if locale else None,
        chat_id=origin.channel_id,
        guild_id=origin.guild_id,
        nsfw_channel=_is_nsfw(channel),
        chat_admin=chat_admin,
    )


def _interaction_caller(interaction: discord.Interaction, origin: Origin) -> Caller:
    # Whoever may manage the server may keep its word lists.
    manages = interaction.guild_id is not None and interaction.permissions.manage_guild
    return _caller(origin, interaction.user, interaction.channel, interaction.locale, chat_admin=manages)


def _carries(message: discord.Message | None, custom_id: str) -> bool:
    if message is None:
        return False
    for row in message.components:
        for component in getattr(row, "children", (row,)):
            if getattr(component, "custom_id", None) == custom_id:
                return True
    return False


async def _answer_stale(interaction: discord.Interaction, key: str) -> None:
    """One short private line in the clicker's language; no user row, no service call."""
    if interaction.response.is_done():
        return
    lang = language_for(str(interaction.locale) if interaction.locale else None)
    try:
        await interaction.response.send_message(t(key, lang), ephemeral=True)
    except discord.HTTPException:
        log.info("interaction %s: could not answer the stale %s", interaction.id, key)


def _is_nsfw(channel: object) -> bool:
    """Age-restricted: a flag of guild channels (threads take their parent's); never a DM."""
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def _never_deliverable(error: discord.HTTPException) -> bool:
    """403 (no access or permission) or 404 (channel gone), or a code that says as much, or a message
    refused for what it is: the same request gets the same answer every time."""
    forbidden = isinstance(error, discord.Forbidden | discord.NotFound)
    return forbidden or error.code in NEVER_DELIVERABLE or error.code in BODY_REFUSED


def _undeliverable(origin: Origin, error: discord.HTTPException) -> Undeliverable:
    return Undeliverable(f"discord channel {origin.channel_id}: {error.status} {error.code} {error.text}")


def _token_dead(error: discord.HTTPException) -> bool:
    """401/50027 once the 15 minutes are over; 404 when the interaction or its webhook is unknown."""
    return (error.status == 401 and error.code == TOKEN_DEAD) or isinstance(error, discord.NotFound)


async def _delete_quietly(message: discord.Message) -> bool:
    """True when the message is gone (already gone counts)."""
    try:
        await message.delete()
    except discord.NotFound:
        return True
    except discord.HTTPException as error:
        log.warning("could not delete message %s (%s)", message.id, error)
        return False
    return True


def _clip(text: str) -> str:
    return clip(text, MESSAGE_LIMIT)
