"""The retention loop (EASEL_KEEP_DAYS): every hour, remove the pictures of jobs older than that
(and the uploads they were drawn from, once no other job needs them).

The sweep itself is storage's (storage/retention.py: small batches, files deleted in a thread, a
pause between batches), shared with `easel prune`.  The job rows stay; /history, /show and the
buttons say "picture expired".  Messages already posted on the platforms are left alone.
"""

from __future__ import annotations

import asyncio
import logging

from bot.runtime.metrics import Metrics
from storage.images import ImageStore
from storage.jobs import Jobs
from storage.retention import SweepReport, cutoff, sweep

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 3600.0
FIRST_SWEEP_AFTER_S = 60.0  # let start-up (recovery, redelivery) go first


class Retention:
    def __init__(self, keep_days: float, jobs: Jobs, images: ImageStore, metrics: Metrics) -> None:
        self.keep_days = keep_days
        self.jobs = jobs
        self.images = images
        self.metrics = metrics
        # The hourly sweep and one an admin starts may overlap: one at a time, so each file is
        # removed and counted by exactly one of them.
        self._one_at_a_time = asyncio.Lock()

    async def sweep_once(self) -> SweepReport:
        """Remove what is older than the retention now; what it freed."""
        async with self._one_at_a_time:
            report = await sweep(self.jobs, self.images, cutoff(self.keep_days))
        self.metrics.expired_pictures.inc(report.files)
        self.metrics.expired_bytes.inc(report.freed_bytes)
        if report.jobs:
            log.info(
                "retention: pictures of %d jobs older than %g days removed, %d files (%d uploads), %.1f MB freed",
                report.jobs,
                self.keep_days,
                report.files,
                report.uploads,
                report.freed_mb,
            )
        return report

    async def run_every(self, interval_s: float = SWEEP_EVERY_S, first_after_s: float = FIRST_SWEEP_AFTER_S) -> None:
        """Sweep now and then until cancelled; a failed sweep is logged and tried again next time."""
        await asyncio.sleep(first_after_s)
        while True:
            try:
                await self.sweep_once()
            except Exception:
                log.exception("retention sweep failed; trying again in %.0f s", interval_s)
            await asyncio.sleep(interval_s)
