"""Status lines to a job's owner: its place in line, its progress, that it was cancelled.  Any of
them may be skipped; one that fails never stops the others."""

from __future__ import annotations

import logging

from bot.contract import Adapter
from bot.core.members import Members
from bot.core.scheduler import Scheduler
from bot.language.messages import t
from storage.jobs import Job, Jobs, JobStatus

log = logging.getLogger(__name__)

POSITION_PUSH_LIMIT = 10


class Notices:
    def __init__(self, jobs: Jobs, adapters: dict[str, Adapter], members: Members, scheduler: Scheduler) -> None:
        self.jobs = jobs
        self.adapters = adapters  # the service's own map: adapters registered later are seen
        self.members = members
        self.scheduler = scheduler
        self._last_position: dict[int, int] = {}

    async def status(self, adapter: Adapter, job: Job, text: str) -> None:
        """A status line may be skipped; one that fails must not stop the updates for others."""
        try:
            await adapter.show_status(job, text)
        except Exception:
            log.warning("status update for job %s failed", job.id, exc_info=True)

    async def tell_cancelled(self, job: Job) -> None:
        adapter = self.adapters.get(job.platform)
        if adapter is not None:
            lang = await self.members.owner_language(job)
            await self.status(adapter, job, t("cancelled", lang, job_id=job.id))

    async def show_progress(self, job_id: int, step: int, total: int) -> None:
        job = await self.jobs.get(job_id)
        adapter = self.adapters.get(job.platform) if job else None
        if adapter is None or job.status is not JobStatus.RUNNING:
            return
        lang = await self.members.owner_language(job)
        await self.status(adapter, job, t("running", lang, job_id=job_id, step=step, steps=total))

    async def tell_admins(self, key: str, **params: object) -> None:
        """One private message to each admin in EASEL_ADMINS whose platform is connected, in their
        language.  Never raises: an admin who cannot be reached is logged and skipped."""
        for entry in self.members.settings.admins:
            platform, _, user_id = entry.partition(":")
            adapter = self.adapters.get(platform)
            tell = getattr(adapter, "tell_admin", None)
            if tell is None or not user_id:
                continue
            try:
                known = await self.members.users.find(platform, user_id)
                lang = self.members.language(known) if known else self.members.settings.default_language
                if not await tell(user_id, t(key, lang, **params)):
                    log.warning("telling admin %s (%s) did not go out", entry, key)
            except Exception:
                log.warning("telling admin %s (%s) failed", entry, key, exc_info=True)

    async def push_positions(self) -> None:
        """Tell the first few queued users their new place in line, once per change."""
        positions = self.scheduler.queue.positions()
        for job_id, position in sorted(positions.items(), key=lambda item: item[1])[:POSITION_PUSH_LIMIT]:
            if self._last_position.get(job_id) == position:
                continue
            self._last_position[job_id] = position
            job = await self.jobs.get(job_id)
            adapter = self.adapters.get(job.platform) if job else None
            if adapter is not None and job.reply_to.get("status_message_id") is not None:
                lang = await self.members.owner_language(job)
                await self.status(adapter, job, self.scheduler.queued_text(job, lang))
        for job_id in list(self._last_position):
            if job_id not in positions:
                del self._last_position[job_id]
