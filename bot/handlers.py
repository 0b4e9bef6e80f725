"""One small handler per command, all wired in `run`.  Each returns the Reply to show."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot import commands as c
from bot.buttons import Action
from bot.errors import UserError
from bot.messages import t
from bot.moderation import scope_for
from bot.wordlist import REGEX_PREFIX, InvalidTerm, check_term
from engine.request import seed_for
from storage.jobs import Job, JobStatus
from storage.users import User

if TYPE_CHECKING:
    from bot.service import Caller, Reply, Service

HISTORY_PAGE_SIZE = 5
SETTINGS = {"lang": ("en", "zh"), "png": ("on", "off")}


@dataclass(frozen=True)
class ButtonPress:
    action: Action
    job_id: int
    picture: int = 0  # which picture of a batch (0-based)
    message_id: str | None = None  # the message the button was pressed on, in the caller's chat


async def run(
    service: Service, caller: Caller, user: User, command, reply_to: dict, idempotency_key: str | None
) -> Reply:
    lang = service.language(user)
    match command:
        case c.Draw(request=request, parent_id=parent_id, style=style):
            return await service.submit(
                caller, user, request, reply_to, parent_id=parent_id, idempotency_key=idempotency_key, style=style
            )
        case ButtonPress():
            return await press(service, caller, user, command, reply_to, idempotency_key)
        case c.Cancel(job_id=job_id):
            return await service.cancel(caller, user, job_id)
        case c.History(page=page):
            return await history(service, user, page)
        case c.Show(job_id=job_id):
            return await show(service, caller, user, job_id)
        case c.Quota():
            return await quota(service, caller, user)
        case c.SettingsCmd(key=key, value=value):
            return await settings(service, user, key, value)
        case c.Help() | c.Start():
            text = t("help", lang)
            if service.is_admin(caller):
                text += "\n\n" + t("help_admin", lang)
            return _reply(service, user, text)
        case c.Styles():
            return styles(service, user)
        case c.WordListCmd():
            if not (service.is_admin(caller) or caller.chat_admin):
                raise UserError("not_admin")
            return await word_list(service, caller, user, command)
    if not service.is_admin(caller):
        raise UserError("not_admin")
    return await admin(service, caller, user, command)


def _reply(service: Service, user: User, text: str, **extra) -> Reply:
    from bot.service import Reply

    return Reply(text, service.language(user), **extra)


async def press(
    service: Service, caller: Caller, user: User, press: ButtonPress, reply_to: dict, idempotency_key: str | None
) -> Reply:
    lang = service.language(user)
    job = await pressed_job(service, caller, press)
    if job is None:
        return _reply(service, user, t("stale_button", lang), alert=True)
    if press.action is Action.PARAMS:
        return _reply(service, user, params_text(service, job, lang), alert=True)
    if press.action is Action.DELETE:
        if job.user_id != user.id and not service.is_admin(caller):
            return _reply(service, user, t("delete_not_yours", lang), alert=True)
        await service.db.jobs.mark_deleted(job.id)
        for path in job.image_paths:
            service.images.delete(service.images.resolve(path))
        if job.user_id != user.id:
            await service.db.audit.record(user.id, "delete", f"job:{job.id}")
        return _reply(service, user, t("deleted", lang), delete_message=True, alert=True)
    request = service.request_for_action(press.action, job, press.picture)
    own_words = job.user_id == user.id  # someone else's words are refused, never struck against the presser
    return await service.submit(
        caller, user, request, reply_to, parent_id=job.id, idempotency_key=idempotency_key, own_words=own_words
    )


async def pressed_job(service: Service, caller: Caller, press: ButtonPress) -> Job | None:
    """The finished job a press names, if the message it was pressed on shows it; None: stale or forged.

    Button data is written by the client: only the message the service posted for this job (and
    picture) may press its buttons, or a forged press would read, copy or delete across chats."""
    job = await service.db.jobs.get(press.job_id)
    if job is None or job.deleted or job.status is not JobStatus.DONE or press.picture >= len(job.image_paths):
        return None
    return job if await _pressed_where_shown(service, caller, press) else None


async def _pressed_where_shown(service: Service, caller: Caller, press: ButtonPress) -> bool:
    if caller.chat_id is None or press.message_id is None:
        return False
    return await service.db.jobs.shows(caller.platform, caller.chat_id, press.message_id, press.job_id, press.picture)


def styles(service: Service, user: User) -> Reply:
    lang = service.language(user)
    lines = [t("styles_header", lang)]
    for style in service.styles.all():
        lines.append(t("styles_line", lang, name=style.name, description=style.describe(lang) or style.prompt))
    return _reply(service, user, "\n".join(lines))


async def word_list(service: Service, caller: Caller, user: User, command: c.WordListCmd) -> Reply:
    """This chat's (or server's) own blocked or sensitive words; every change is audited."""
    lang = service.language(user)
    scope = scope_for(caller)
    name = t(f"list.{command.list_name}", lang)
    moderator = service.moderator
    if command.action == "list":
        terms, configured = await moderator.listing(scope, command.list_name)
        if not terms:
            return _reply(service, user, t("wordlist_empty", lang, list=name, configured=configured), alert=True)
        # In a group everyone reads the answer: show the admin enough to recognise each term.
        shown = ", ".join(_masked(term) if caller.public else term for term in terms)
        text = t("wordlist_listing", lang, list=name, count=len(terms), terms=shown, configured=configured)
        return _reply(service, user, text, alert=True)
    try:
        term = check_term(command.term or "")
    except InvalidTerm as error:
        raise UserError("wordlist_invalid", reason=str(error)[:100]) from error
    if command.action == "add":
        # A regular expression runs on every prompt: a careless one could stall the bot for all.
        if term.startswith(REGEX_PREFIX) and not service.is_admin(caller):
            raise UserError("wordlist_regex_admins")
        if await moderator.is_full(scope, command.list_name):
            raise UserError("wordlist_full", list=name, limit=service.settings.max_chat_terms)
        changed = [term] if await moderator.add(scope, command.list_name, term, user.id) else []
        key = "wordlist_added" if changed else "wordlist_exists"
    else:
        changed = await moderator.remove(scope, command.list_name, term)
        key = "wordlist_removed" if changed else "wordlist_missing"
    for each in changed:
        details = {"list": command.list_name, "term": each}
        await service.db.audit.record(user.id, f"{command.list_name}_{command.action}", scope, details)
    return _reply(service, user, t(key, lang, list=name, term=", ".join(changed) or term), alert=True)


def params_text(service: Service, job: Job, lang: str) -> str:
    r = job.request
    pictures = len(job.image_paths)
    seed = job.seed if pictures <= 1 or job.seed is None else f"{job.seed}–{seed_for(job.seed, pictures - 1)}"
    return t(
        "params",
        lang,
        prompt=r["prompt"],
        negative=r.get("negative_prompt") or "-",
        seed=seed,
        steps=r["steps"],
        cfg=r["cfg"],
        width=r["width"],
        height=r["height"],
        model=service.model_name,
    )


async def history(service: Service, user: User, page: int) -> Reply:
    lang = service.language(user)
    jobs, total = await service.db.jobs.list_for_user(user.id, page - 1, HISTORY_PAGE_SIZE)
    if total == 0:
        return _reply(service, user, t("history_empty", lang))
    pages = max(1, math.ceil(total / HISTORY_PAGE_SIZE))
    lines = [t("history_header", lang, page=min(page, pages), pages=pages)]
    for job in jobs:
        lines.append(
            t(
                "history_line",
                lang,
                job_id=job.id,
                status=t(f"status.{job.status.value}", lang),
                prompt=_excerpt(job.request["prompt"]),
                created=job.created_at[:16].replace("T", " "),
            )
        )
    return _reply(service, user, "\n".join(lines))


async def show(service: Service, caller: Caller, user: User, job_id: int) -> Reply:
    lang = service.language(user)
    job = await service.db.jobs.get(job_id)
    if job is None or (job.user_id != user.id and not service.is_admin(caller)):
        raise UserError("job_not_found", job_id=job_id)
    story = await service.db.jobs.lineage(job_id) + await service.db.jobs.children(job_id)
    lines = [t("show_header", lang, job_id=job_id)]
    for entry in story:
        r = entry.request
        lines.append(
            t(
                "show_line",
                lang,
                job_id=entry.id,
                kind=t(f"kind.{entry.kind}", lang),
                status=t(f"status.{entry.status.value}", lang),
                prompt=_excerpt(r["prompt"]),
                seed=entry.seed if entry.seed is not None else "-",
                width=r["width"],
                height=r["height"],
                steps=r["steps"],
                cfg=r["cfg"],
                cost=service.cost_of(r),
            )
        )
    return _reply(service, user, "\n".join(lines))


async def quota(service: Service, caller: Caller, user: User) -> Reply:
    lang = service.language(user)
    used = await service.db.quota.used(user.id, service.today())
    limit = service.daily_limit(caller, user)
    if limit is None:
        return _reply(service, user, t("quota_unlimited", lang, used=used))
    left = max(0, limit - used)
    return _reply(service, user, t("quota_status", lang, used=used, limit=limit, left=left, resets=service.resets_in()))


async def settings(service: Service, user: User, key: str | None, value: str | None) -> Reply:
    lang = service.language(user)
    if key is None:
        png = t("settings.on" if user.settings.get("png") else "settings.off", lang)
        return _reply(service, user, t("settings_current", lang, lang=lang, png=png))
    key = key.lower()
    choices = SETTINGS.get(key)
    if choices is None or (value or "").lower() not in choices:
        keys = ", ".join(f"{k} {'|'.join(v)}" for k, v in SETTINGS.items())
        raise UserError("settings_unknown", key=f"{key} {value or ''}".strip(), keys=keys)
    value = value.lower()
    if key == "lang":
        await service.db.users.set_language(user.id, value)
        lang = value
    else:
        await service.db.users.set_setting(user.id, key, value == "on")
    from bot.service import Reply

    return Reply(t("settings_saved", lang, key=key, value=value), lang)


async def admin(service: Service, caller: Caller, actor: User, command) -> Reply:
    lang = service.language(actor)
    match command:
        case c.QueueCmd():
            return await queue_listing(service, actor)
        case c.Stats():
            counts = await service.db.jobs.counts_by_status()
            users = await service.db.users.count()
            lines = [t("stats", lang, users=users, workers=service.live_workers(), **counts)]
            metrics = service.metrics
            errors = sum(
                metrics.value("easel_platform_errors_total", platform=platform) for platform in service.adapters
            )
            lines.append(
                t(
                    "stats_health",
                    lang,
                    oom=int(metrics.value("easel_fallbacks_total", kind="oom")),
                    nan=int(metrics.value("easel_fallbacks_total", kind="nan")),
                    errors=int(errors),
                )
            )
            cached = int(metrics.value("easel_prompt_cache_total", result="hit"))
            encoded = cached + int(metrics.value("easel_prompt_cache_total", result="miss"))
            learned = int(metrics.value("easel_learned_starts_total"))
            lines.append(t("stats_learned", lang, learned=learned, cached=cached, encoded=encoded))
            spent = await service.db.quota.spent(service.today())
            waiting = sum(service.queue.cost_of(job_id) or 0 for job_id, _ in service.queue.snapshot())
            lines.append(t("stats_units", lang, spent=spent, waiting=waiting))
            lines.append(await moderation_stats(service, lang))
            if getattr(service.worker, "redis_ok", True) is False:
                lines.append(t("stats_redis_down", lang))
            _, dead = await service.db.jobs.dead_deliveries(limit=0)
            if dead:
                lines.append(t("stats_dead_deliveries", lang, count=dead))
            return _reply(service, actor, "\n".join(lines))
    if isinstance(command, c.Ban) and caller.replied_user_id and not _names_explicitly(command.target):
        # In reply: every word is the reason ("/ban 3 times spamming" must not ban user 3).
        command = c.Ban("", f"{command.target} {command.reason}".strip())
    target = await resolve_target(service, caller, command.target)
    match command:
        case c.Ban(reason=reason):
            await service.db.users.set_banned(target.id, True)
            action, details = "ban", {"reason": reason}
        case c.Unban():
            await service.db.users.set_banned(target.id, False)
            action, details = "unban", {}
        case c.SetQuota(limit=limit):
            await service.db.users.set_quota_override(target.id, limit)
            action, details = "setquota", {"limit": limit}
        case c.SetRole(role=role):
            await service.db.users.set_role(target.id, role)
            action, details = "setrole", {"role": role}
        case _:
            raise UserError("error.unknown_command", command=type(command).__name__.lower())
    label = f"{target.platform}:{target.platform_id}"
    await service.db.audit.record(actor.id, action, label, details)
    shown = t("admin_target", lang, name=target.name, id=label) if target.name else label
    return _reply(service, actor, t("admin_done", lang, action=t(f"action.{action}", lang), target=shown))


async def moderation_stats(service: Service, lang: str) -> str:
    store = service.db.moderation
    strikes = sum(count for _, _, count, _ in await store.strikes_since(service.moderator.clock() - 86400))
    limited = []
    for user_id, scope, count, left in await service.moderator.limited_users():
        who = await service.db.users.get(user_id)
        label = f"{who.platform}:{who.name or who.platform_id}" if who else str(user_id)
        limited.append(t("limited_user", lang, user=label, scope=scope, strikes=count, left=_minutes(left)))
    return t("stats_moderation", lang, strikes=strikes, limited=", ".join(limited) or t("nobody", lang))


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


def _minutes(seconds: float) -> str:
    return f"{math.ceil(seconds / 60)} min"


async def resolve_target(service: Service, caller: Caller, target: str) -> User:
    """`telegram:123`, a bare id on the admin's own platform, a Discord mention, or (no target) the
    sender of the message the command replies to: a real platform id, seen or not yet.  Never a
    name: anyone can take another's display name or a freed @username."""
    target = target.strip()
    if not target:
        if caller.replied_user_id is None:
            raise UserError("target_missing")
        return await service.db.users.get_or_create(caller.platform, caller.replied_user_id)
    match = c.TARGET.fullmatch(target)
    if match is None:
        raise UserError("user_not_found", target=target[:40])
    platform, number, mentioned = match.groups()
    if mentioned is not None:
        platform, number = "discord", mentioned
    platform = (platform or caller.platform).lower()
    if platform not in ("telegram", "discord", "console"):
        raise UserError("user_not_found", target=target[:40])
    return await service.db.users.get_or_create(platform, number)


async def queue_listing(service: Service, actor: User) -> Reply:
    lang = service.language(actor)
    snapshot = service.queue.snapshot()
    lines = [t("queue_header", lang, count=len(snapshot)) if snapshot else t("queue_empty", lang)]
    for position, (job_id, owner) in enumerate(snapshot[:20], start=1):
        job = await service.db.jobs.get(job_id)
        prompt = _excerpt(job.request["prompt"]) if job else "?"
        cost = service.queue.cost_of(job_id) or "?"
        lines.append(t("queue_line", lang, position=position, job_id=job_id, user=owner, cost=cost, prompt=prompt))
    lines.extend(await dead_deliveries(service, lang))
    return _reply(service, actor, "\n".join(lines))


async def dead_deliveries(service: Service, lang: str) -> list[str]:
    """The pictures whose delivery was given up (newest first), for /queue; nothing when none."""
    jobs, total = await service.db.jobs.dead_deliveries(limit=10)
    if not total:
        return []
    lines = ["", t("queue_dead_header", lang, count=total)]
    for job in jobs:
        owner = await service.db.users.get(job.user_id)
        user = (owner.name or owner.platform_id) if owner else "?"
        reason = _excerpt(job.delivery_error or "", 120)
        lines.append(t("queue_dead_line", lang, job_id=job.id, user=user, platform=job.platform, reason=reason))
    return lines


def _excerpt(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
