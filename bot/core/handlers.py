"""One small handler per command, each `async (ctx, command) -> Reply`, routed by the command's type
in `HANDLERS` (anyone) and `ADMIN_HANDLERS` (bot admins).  The `Context` (bot/core/context.py) holds who
asked and the parts a handler may use."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

from bot.community.moderation import scope_for
from bot.community.wordlist import REGEX_PREFIX, InvalidTerm, check_term
from bot.contract import Caller, Reply
from bot.core.context import Context
from bot.core.variations import request_for_action
from bot.language import commands as c
from bot.language.buttons import Action
from bot.language.commands import SETTINGS, ButtonPress
from bot.language.errors import UserError
from bot.language.messages import t
from bot.language.text import clip, minutes
from engine.loras import tags
from engine.request import DrawRequest, seed_for
from storage.disk import DiskGuard
from storage.jobs import Job, Jobs, JobStatus
from storage.retention import release_upload
from storage.users import User

HISTORY_PAGE_SIZE = 5
EXCERPT = 60  # characters of a prompt in a listing

Handler = Callable[[Context, Any], Awaitable[Reply]]


async def run(ctx: Context, command: Any) -> Reply:
    """Route one command to its handler; a command not for everyone is for admins only."""
    handler = HANDLERS.get(type(command))
    if handler is None:
        if not ctx.is_admin:
            raise UserError("not_admin")
        handler = ADMIN_HANDLERS.get(type(command), unknown)
    return await handler(ctx, command)


# -- drawing -------------------------------------------------------------------------------------


async def draw(ctx: Context, command: c.Draw) -> Reply:
    """/draw: hand the request to the intake, which answers "queued"."""
    return await ctx.intake.submit(
        ctx.caller,
        ctx.user,
        command.request,
        ctx.reply_to,
        parent_id=command.parent_id,
        idempotency_key=ctx.idempotency_key,
        style=command.style,
    )


async def press(ctx: Context, press: ButtonPress) -> Reply:
    """A button under a finished job: its parameters, delete it, or a new job made from it."""
    job = await pressed_job(ctx.db.jobs, ctx.caller, press)
    if job is None:
        return ctx.reply(t("stale_button", ctx.language), alert=True)
    if press.action is Action.PARAMS:
        return ctx.reply(params_text(job, ctx.language, ctx.model_name), alert=True)
    if press.action is Action.DELETE:
        return await delete(ctx, job)
    # retention removed the pictures (and an upload with the last job drawn from it); a reroll
    # needs none, unless it was drawn from a picture
    expired = job.expired and (press.action is not Action.REROLL or job.request.get("source_image"))
    if expired or picture_gone(ctx, job, press):
        return ctx.reply(t("picture_expired", ctx.language, job_id=job.id), alert=True)
    if press.action is Action.ENHANCE and not job.request.get("draft"):  # only a draft has the button
        return ctx.reply(t("stale_button", ctx.language), alert=True)
    request = request_for_action(press.action, job, press.picture, ctx.profile, ctx.images)
    own_words = job.user_id == ctx.user.id  # someone else's words are refused, never struck against the presser
    return await ctx.intake.submit(
        ctx.caller,
        ctx.user,
        request,
        ctx.reply_to,
        parent_id=job.id,
        idempotency_key=ctx.idempotency_key,
        own_words=own_words,
    )


def picture_gone(ctx: Context, job: Job, press: ButtonPress) -> bool:
    """Whether the file the new job would be drawn from is missing although the job is not marked
    expired: retention removes the files first and marks the jobs after (a press in between, or
    after a crash between the two, would queue a job that fails on a missing source)."""
    source = job.request.get("source_image") if press.action is Action.REROLL else job.image_paths[press.picture]
    if not source:
        return False
    try:
        return not ctx.images.resolve(source).exists()
    except ValueError:  # a path outside the store (an old row): left to the job to report
        return False


async def delete(ctx: Context, job: Job) -> Reply:
    """The delete button: the owner's or an admin's; the pictures go, the row stays (marked)."""
    if job.user_id != ctx.user.id and not ctx.is_admin:
        return ctx.reply(t("delete_not_yours", ctx.language), alert=True)
    await ctx.db.jobs.mark_deleted(job.id)
    for path in job.image_paths:
        ctx.images.delete(ctx.images.resolve(path))
    await release_upload(ctx.db.jobs, ctx.images, job.request.get("source_image"))  # unless a reroll needs it
    if job.user_id != ctx.user.id:
        await ctx.db.audit.record(ctx.user.id, "delete", f"job:{job.id}")
    return ctx.reply(t("deleted", ctx.language), delete_message=True, alert=True)


async def pressed_job(jobs: Jobs, caller: Caller, press: ButtonPress) -> Job | None:
    """The finished job a press names, if the message it was pressed on shows it; None: stale or forged.

    Button data is written by the client: only the message the service posted for this job (and
    picture) may press its buttons, or a forged press would read, copy or delete across chats."""
    job = await jobs.get(press.job_id)
    if job is None or job.deleted or job.status is not JobStatus.DONE or press.picture >= len(job.image_paths):
        return None
    if caller.chat_id is None or press.message_id is None:
        return None
    shown = await jobs.shows(caller.platform, caller.chat_id, press.message_id, press.job_id, press.picture)
    return job if shown else None


def kind_of(job: Job, request: DrawRequest) -> str:
    """What a job was, for /show: a picture drawn from one the user brought names it as the source."""
    return "upload" if job.parent_id is None and request.source_image else job.kind


def params_text(job: Job, lang: str, model_name: str) -> str:
    request = DrawRequest.from_dict(job.request)
    pictures = len(job.image_paths)
    seed = job.seed if pictures <= 1 or job.seed is None else f"{job.seed}–{seed_for(job.seed, pictures - 1)}"
    extra = [t("params_expanded", lang, expanded=request.expanded)] if request.expanded else []
    if request.chaos:
        extra.append(t("params_chaos", lang, chaos=request.chaos))
    if request.draft:
        extra.append(t("params_draft", lang))
    if request.loras:
        extra.append(t("params_loras", lang, loras=tags(request.loras)))
    return "\n".join([params_core(request, seed, lang, model_name), *extra])


def params_core(request: DrawRequest, seed: object, lang: str, model_name: str) -> str:
    return t(
        "params",
        lang,
        prompt=request.prompt,
        negative=request.negative_prompt or "-",
        seed=seed,
        steps=request.steps,
        cfg=request.cfg,
        width=request.width,
        height=request.height,
        model=model_name,
    )


async def cancel(ctx: Context, command: c.Cancel) -> Reply:
    """/cancel [job]: the user's latest waiting job, or the one named (an admin may name anyone's)."""
    lang = ctx.language
    if command.job_id is None:
        pending = await ctx.db.jobs.pending_for_user(ctx.user.id)
        if not pending:
            return ctx.reply(t("cancel_none", lang))
        job = pending[-1]
    else:
        job = await ctx.db.jobs.get(command.job_id)
        if job is None:
            raise UserError("job_not_found", job_id=command.job_id)
    if job.user_id != ctx.user.id and not ctx.is_admin:
        raise UserError("cancel_not_yours")
    if await ctx.dispatcher.cancel(job):
        return ctx.reply(t("cancelled", lang, job_id=job.id))
    return ctx.reply(t("cancel_none", lang))


# -- reading ---------------------------------------------------------------------------------------


async def history(ctx: Context, command: c.History) -> Reply:
    lang = ctx.language
    jobs, total = await ctx.db.jobs.list_for_user(ctx.user.id, command.page - 1, HISTORY_PAGE_SIZE)
    if total == 0:
        return ctx.reply(t("history_empty", lang))
    pages = max(1, math.ceil(total / HISTORY_PAGE_SIZE))
    lines = [t("history_header", lang, page=min(command.page, pages), pages=pages)]
    for job in jobs:
        lines.append(
            t(
                "history_line",
                lang,
                job_id=job.id,
                status=status_text(job, lang),
                prompt=clip(DrawRequest.from_dict(job.request).prompt, EXCERPT),
                created=job.created_at[:16].replace("T", " "),
            )
        )
    return ctx.reply("\n".join(lines))


async def show(ctx: Context, command: c.Show) -> Reply:
    """/show <job>: the job's lineage, its parents and children."""
    lang, job_id = ctx.language, command.job_id
    job = await ctx.db.jobs.get(job_id)
    if job is None or (job.user_id != ctx.user.id and not ctx.is_admin):
        raise UserError("job_not_found", job_id=job_id)
    story = await ctx.db.jobs.lineage(job_id) + await ctx.db.jobs.children(job_id)
    lines = [t("show_header", lang, job_id=job_id)]
    for entry in story:
        request = DrawRequest.from_dict(entry.request)
        lines.append(
            t(
                "show_line",
                lang,
                job_id=entry.id,
                kind=t(f"kind.{kind_of(entry, request)}", lang),
                status=status_text(entry, lang),
                prompt=clip(request.prompt, EXCERPT),
                seed=entry.seed if entry.seed is not None else "-",
                width=request.width,
                height=request.height,
                steps=request.steps,
                cfg=request.cfg,
                cost=ctx.scheduler.cost_of(request),
            )
        )
        if request.expanded:  # the prompt enhancer's words, under the user's
            lines.append(t("show_expanded", lang, expanded=clip(request.expanded, EXCERPT)))
        if request.loras:
            lines.append(t("params_loras", lang, loras=tags(request.loras)))
    return ctx.reply("\n".join(lines))


def status_text(job: Job, lang: str) -> str:
    """The job's state in words; a done job whose pictures retention removed says so."""
    return t("status.expired" if job.expired else f"status.{job.status.value}", lang)


async def quota(ctx: Context, command: c.Quota) -> Reply:
    lang, members = ctx.language, ctx.members
    used = await ctx.db.quota.used(ctx.user.id, members.today())
    limit = members.daily_limit(ctx.caller, ctx.user)
    if limit is None:
        return ctx.reply(t("quota_unlimited", lang, used=used))
    left = max(0, limit - used)
    return ctx.reply(t("quota_status", lang, used=used, limit=limit, left=left, resets=members.resets_in()))


async def settings(ctx: Context, command: c.SettingsCmd) -> Reply:
    """/settings [key value]: show them, or change one (the answer comes in the new language)."""
    lang, user = ctx.language, ctx.user
    if command.key is None:
        png = t("settings.on" if user.settings.get("png") else "settings.off", lang)
        return ctx.reply(t("settings_current", lang, lang=lang, png=png))
    key, value = command.key.lower(), command.value
    choices = SETTINGS.get(key)
    if choices is None or (value or "").lower() not in choices:
        keys = ", ".join(f"{k} {'|'.join(v)}" for k, v in SETTINGS.items())
        raise UserError("settings_unknown", key=f"{key} {value or ''}".strip(), keys=keys)
    value = value.lower()
    if key == "lang":
        await ctx.db.users.set_language(user.id, value)
        lang = value
    else:
        await ctx.db.users.set_setting(user.id, key, value == "on")
    return Reply(t("settings_saved", lang, key=key, value=value), lang)


async def help_(ctx: Context, command: c.Help | c.Start) -> Reply:
    text = t("help", ctx.language)
    if ctx.is_admin:
        text += "\n\n" + t("help_admin", ctx.language)
    return ctx.reply(text)


async def styles(ctx: Context, command: c.Styles) -> Reply:
    lang = ctx.language
    lines = [t("styles_header", lang)]
    for style in ctx.styles.all():
        lines.append(t("styles_line", lang, name=style.name, description=style.describe(lang) or style.prompt))
    return ctx.reply("\n".join(lines))


async def loras(ctx: Context, command: c.Loras) -> Reply:
    """The installed LoRAs: name, a line of description, trigger words, default weight."""
    lang = ctx.language
    if ctx.loras is not None:
        ctx.loras.rescan()  # files added, changed or removed since: the folder is the truth
    installed = [ctx.loras.get(name) for name in ctx.loras.names()] if ctx.loras is not None else []
    if not installed:
        return ctx.reply(t("loras_none", lang))
    lines = [t("loras_header", lang)]
    for lora in installed:
        triggers = ", ".join(lora.triggers) or "-"
        description = clip(lora.description, 120) or "-"
        lines.append(
            t(
                "loras_line",
                lang,
                name=lora.name,
                weight=f"{lora.default_weight:g}",
                description=description,
                triggers=triggers,
            )
        )
    return ctx.reply("\n".join(lines))


async def lora_reload(ctx: Context, command: c.LoraReload) -> Reply:
    """/lora reload (admins): read the LoRA folder now; say what is installed and what was skipped, why."""
    lang = ctx.language
    if ctx.loras is None:
        return ctx.reply(t("loras_none", lang))
    ctx.loras.rescan()
    names = ctx.loras.names()
    lines = [t("lora_reloaded", lang, count=len(names), names=", ".join(names) or "-")]
    if ctx.loras.skipped:
        lines.append(t("lora_reloaded_skipped", lang, count=len(ctx.loras.skipped)))
        for file, reason in sorted(ctx.loras.skipped.items()):
            lines.append(t("lora_skipped_line", lang, file=file, reason=clip(reason, 160)))
    return ctx.reply("\n".join(lines))


# -- a chat's own word lists -------------------------------------------------------------------------


async def word_list(ctx: Context, command: c.WordListCmd) -> Reply:
    """This chat's (or server's) own blocked or sensitive words, for bot and chat admins; every
    change is audited."""
    if not (ctx.is_admin or ctx.caller.chat_admin):
        raise UserError("not_admin")
    if command.action == "list":
        return await _listing(ctx, command)
    try:
        term = check_term(command.term or "")
    except InvalidTerm as error:
        raise UserError("wordlist_invalid", reason=str(error)[:100]) from error
    scope, moderator = scope_for(ctx.caller), ctx.moderator
    name = t(f"list.{command.list_name}", ctx.language)
    if command.action == "add":
        # A regular expression runs on every prompt: a careless one could stall the bot for all.
        if term.startswith(REGEX_PREFIX) and not ctx.is_admin:
            raise UserError("wordlist_regex_admins")
        if await moderator.is_full(scope, command.list_name):
            raise UserError("wordlist_full", list=name, limit=ctx.settings.max_chat_terms)
        changed = [term] if await moderator.add(scope, command.list_name, term, ctx.user.id) else []
        key = "wordlist_added" if changed else "wordlist_exists"
    else:
        changed = await moderator.remove(scope, command.list_name, term)
        key = "wordlist_removed" if changed else "wordlist_missing"
    for each in changed:
        details = {"list": command.list_name, "term": each}
        await ctx.db.audit.record(ctx.user.id, f"{command.list_name}_{command.action}", scope, details)
    return ctx.reply(t(key, ctx.language, list=name, term=", ".join(changed) or term), alert=True)


async def _listing(ctx: Context, command: c.WordListCmd) -> Reply:
    lang = ctx.language
    name = t(f"list.{command.list_name}", lang)
    terms, configured = await ctx.moderator.listing(scope_for(ctx.caller), command.list_name)
    if not terms:
        return ctx.reply(t("wordlist_empty", lang, list=name, configured=configured), alert=True)
    # In a group everyone reads the answer: show the admin enough to recognise each term.
    shown = ", ".join(_masked(term) if ctx.caller.public else term for term in terms)
    return ctx.reply(
        t("wordlist_listing", lang, list=name, count=len(terms), terms=shown, configured=configured), alert=True
    )


# -- admins ------------------------------------------------------------------------------------------


async def queue_listing(ctx: Context, command: c.QueueCmd) -> Reply:
    """/queue: the next twenty jobs in dispatch order, then the deliveries given up."""
    lang, queue = ctx.language, ctx.scheduler.queue
    snapshot = queue.snapshot()
    lines = [t("queue_header", lang, count=len(snapshot)) if snapshot else t("queue_empty", lang)]
    for position, (job_id, owner) in enumerate(snapshot[:20], start=1):
        job = await ctx.db.jobs.get(job_id)
        prompt = clip(DrawRequest.from_dict(job.request).prompt, EXCERPT) if job else "?"
        cost = queue.cost_of(job_id) or "?"
        lines.append(t("queue_line", lang, position=position, job_id=job_id, user=owner, cost=cost, prompt=prompt))
    lines.extend(await dead_deliveries(ctx))
    return ctx.reply("\n".join(lines))


async def dead_deliveries(ctx: Context) -> list[str]:
    """The pictures whose delivery was given up (newest first), for /queue; nothing when none."""
    jobs, total = await ctx.db.jobs.dead_deliveries(limit=10)
    if not total:
        return []
    lines = ["", t("queue_dead_header", ctx.language, count=total)]
    for job in jobs:
        owner = await ctx.db.users.get(job.user_id)
        user = (owner.name or owner.platform_id) if owner else "?"
        reason = clip(job.delivery_error or "", 120)
        lines.append(t("queue_dead_line", ctx.language, job_id=job.id, user=user, platform=job.platform, reason=reason))
    return lines


async def stats(ctx: Context, command: c.Stats) -> Reply:
    """/stats: jobs by state, health, learning, work units, moderation, and what needs an admin."""
    lang, metrics = ctx.language, ctx.metrics
    counts = await ctx.db.jobs.counts_by_status()
    users = await ctx.db.users.count()
    lines = [t("stats", lang, users=users, workers=ctx.worker.live_workers(), **counts)]
    errors = sum(metrics.value("easel_platform_errors_total", platform=platform) for platform in ctx.adapters)
    oom = int(metrics.value("easel_fallbacks_total", kind="oom"))
    nan = int(metrics.value("easel_fallbacks_total", kind="nan"))
    lines.append(t("stats_health", lang, oom=oom, nan=nan, errors=int(errors)))
    cached = int(metrics.value("easel_prompt_cache_total", result="hit"))
    encoded = cached + int(metrics.value("easel_prompt_cache_total", result="miss"))
    learned = int(metrics.value("easel_learned_starts_total"))
    lines.append(t("stats_learned", lang, learned=learned, cached=cached, encoded=encoded))
    spent = await ctx.db.quota.spent(ctx.members.today())
    lines.append(t("stats_units", lang, spent=spent, waiting=ctx.scheduler.waiting_units()))
    if recipes := ctx.worker.recipes():
        counted = ", ".join(f"{recipe} x{count}" for recipe, count in sorted(recipes.items()))
        lines.append(t("stats_recipes", lang, recipes=counted))
    lines.append(await moderation_stats(ctx))
    if not ctx.worker.healthy():
        lines.append(t("stats_redis_down", lang))
    _, dead = await ctx.db.jobs.dead_deliveries(limit=0)
    if dead:
        lines.append(t("stats_dead_deliveries", lang, count=dead))
    if ctx.disk is not None:
        lines.append(disk_line(ctx.disk, lang))
    return ctx.reply("\n".join(lines))


def disk_line(disk: DiskGuard, lang: str) -> str:
    """Free space on the data disk, and whether the guard refuses new jobs now."""
    key = "stats_disk_low" if disk.low() else "stats_disk"
    return t(key, lang, free=f"{disk.free_gb():.1f}", guard=f"{disk.min_free_gb:g}")


async def moderation_stats(ctx: Context) -> str:
    lang = ctx.language
    since = ctx.moderator.clock() - 86400
    strikes = sum(count for _, _, count, _ in await ctx.db.moderation.strikes_since(since))
    limited = []
    for user_id, scope, count, left in await ctx.moderator.limited_users():
        who = await ctx.db.users.get(user_id)
        label = f"{who.platform}:{who.name or who.platform_id}" if who else str(user_id)
        limited.append(t("limited_user", lang, user=label, scope=scope, strikes=count, left=minutes(left)))
    return t("stats_moderation", lang, strikes=strikes, limited=", ".join(limited) or t("nobody", lang))


async def ban(ctx: Context, command: c.Ban) -> Reply:
    if ctx.caller.replied_user_id and not _names_explicitly(command.target):
        # In reply: every word is the reason ("/ban 3 times spamming" must not ban user 3).
        command = c.Ban("", f"{command.target} {command.reason}".strip())
    target = await resolve_target(ctx, command.target)
    await ctx.db.users.set_banned(target.id, True)
    return await _done(ctx, target, "ban", {"reason": command.reason})


async def unban(ctx: Context, command: c.Unban) -> Reply:
    target = await resolve_target(ctx, command.target)
    await ctx.db.users.set_banned(target.id, False)
    return await _done(ctx, target, "unban", {})


async def set_quota(ctx: Context, command: c.SetQuota) -> Reply:
    target = await resolve_target(ctx, command.target)
    await ctx.db.users.set_quota_override(target.id, command.limit)
    return await _done(ctx, target, "setquota", {"limit": command.limit})


async def set_role(ctx: Context, command: c.SetRole) -> Reply:
    target = await resolve_target(ctx, command.target)
    await ctx.db.users.set_role(target.id, command.role)
    return await _done(ctx, target, "setrole", {"role": command.role})


async def unknown(ctx: Context, command: Any) -> Reply:
    raise UserError("error.unknown_command", command=type(command).__name__.lower())


async def _done(ctx: Context, target: User, action: str, details: dict) -> Reply:
    """Audit an admin's change to a user, and say it was done."""
    lang = ctx.language
    label = f"{target.platform}:{target.platform_id}"
    await ctx.db.audit.record(ctx.user.id, action, label, details)
    shown = t("admin_target", lang, name=target.name, id=label) if target.name else label
    return ctx.reply(t("admin_done", lang, action=t(f"action.{action}", lang), target=shown))


async def resolve_target(ctx: Context, target: str) -> User:
    """`telegram:123`, a bare id on the admin's own platform, a Discord mention, or (no target) the
    sender of the message the command replies to: a real platform id, seen or not yet.  Never a
    name: anyone can take another's display name or a freed @username."""
    caller, users = ctx.caller, ctx.db.users
    target = target.strip()
    if not target:
        if caller.replied_user_id is None:
            raise UserError("target_missing")
        return await users.get_or_create(caller.platform, caller.replied_user_id)
    match = c.TARGET.fullmatch(target)
    if match is None:
        raise UserError("user_not_found", target=target[:40])
    platform, number, mentioned = match.groups()
    if mentioned is not None:
        platform, number = "discord", mentioned
    platform = (platform or caller.platform).lower()
    if platform not in ("telegram", "discord", "console"):
        raise UserError("user_not_found", target=target[:40])
    return await users.get_or_create(platform, number)


# -- the routing tables --------------------------------------------------------------------------------

HANDLERS: dict[type, Handler] = {
    c.Draw: draw,
    ButtonPress: press,
    c.Cancel: cancel,
    c.History: history,
    c.Show: show,
    c.Quota: quota,
    c.SettingsCmd: settings,
    c.Help: help_,
    c.Start: help_,
    c.Styles: styles,
    c.Loras: loras,
    c.WordListCmd: word_list,
}

ADMIN_HANDLERS: dict[type, Handler] = {
    c.QueueCmd: queue_listing,
    c.Stats: stats,
    c.Ban: ban,
    c.Unban: unban,
    c.SetQuota: set_quota,
    c.SetRole: set_role,
    c.LoraReload: lora_reload,
}


def _names_explicitly(target: str) -> bool:
    """`telegram:123` or a mention `<@123>`: a user named on purpose; a bare number may be any word."""
    match = c.TARGET.fullmatch(target.strip())
    return match is not None and (match[1] is not None or match[3] is not None)


def _masked(term: str) -> str:
    """`kraken` -> `k····n`: recognisable to whoever added it, unreadable to the rest of the group."""
    if term.startswith(REGEX_PREFIX):
        return REGEX_PREFIX + "·" * min(8, len(term) - len(REGEX_PREFIX))
    if len(term) <= 2:
        return "·" * len(term)
    return term[0] + "·" * (len(term) - 2) + term[-1]
