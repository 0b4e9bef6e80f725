"""The scheduler: which job runs next, what each costs, and when each will be done.

It owns the fair queue (bot/core/queue.py), the run-time estimates (bot/core/eta.py) and the work-unit costs
(bot/core/cost.py), plus what it needs for ETAs: each queued job's estimated run time, when it was
queued, and the jobs running now.  It knows no storage and no chat, so it can be built and tested
alone (tests/test_scheduler.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bot.core.cost import Unit, guidance_factor, request_cost
from bot.core.eta import EtaEstimator, eta_for_position
from bot.core.queue import FairQueue
from bot.language.messages import t
from bot.language.text import duration
from engine.request import DrawRequest

if TYPE_CHECKING:
    from storage.jobs import Job  # read only: id, platform, user_id, request, count


class Scheduler:
    def __init__(
        self, unit: Unit, live_workers: Callable[[], int], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.unit = unit  # what one work unit is for this model (bot/core/cost.py)
        self.queue = FairQueue()
        self.eta = EtaEstimator()
        self._live_workers = live_workers
        self._clock = clock
        self._costs: dict[int, float] = {}  # queued job -> estimated seconds
        self._enqueued_at: dict[int, float] = {}
        self._running: dict[int, tuple[float, float]] = {}  # job id -> (started, estimated seconds)

    # -- costs and the queue ---------------------------------------------------------------------

    def cost_of(self, request: DrawRequest) -> int:
        """What a request costs in work units: bot/core/cost.py, in this model's unit."""
        return request_cost(request, self.unit)

    def enqueue(self, job: Job) -> None:
        request = DrawRequest.from_dict(job.request)
        one = self.eta.estimate(request.width, request.height, request.steps)
        self._costs[job.id] = one * job.count * guidance_factor(request.cfg or 1.0)
        self.queue.push(job.id, f"{job.platform}:{job.user_id}", cost=self.cost_of(request))
        self._enqueued_at[job.id] = self._clock()

    def remove(self, job_id: int) -> bool:
        """Take a queued job out (a cancel); False when it is not queued."""
        if not self.queue.remove(job_id):
            return False
        self._enqueued_at.pop(job_id, None)
        self._costs.pop(job_id, None)
        return True

    async def next_job(self) -> int:
        """Wait for and take the next job in fair order (cancel-safe, as FairQueue.get)."""
        job_id, _ = await self.queue.get()
        return job_id

    def waiting_units(self) -> int:
        """Work units of every queued job."""
        return sum(self.queue.cost_of(job_id) or 0 for job_id, _ in self.queue.snapshot())

    # -- running ---------------------------------------------------------------------------------

    def taken(self, job_id: int) -> tuple[float, float | None]:
        """A job left the queue: forget its queue bookkeeping.  (estimated seconds, when it was queued)."""
        return self._costs.pop(job_id, 0.0), self._enqueued_at.pop(job_id, None)

    def started(self, job_id: int, estimate: float, enqueued: float | None) -> float | None:
        """A job went to a worker: its run counts towards others' ETAs.  Seconds it waited, if known."""
        now = self._clock()
        self._running[job_id] = (now, estimate)
        return None if enqueued is None else now - enqueued

    def ended(self, job_id: int) -> None:
        self._running.pop(job_id, None)

    def is_running(self, job_id: int) -> bool:
        return job_id in self._running

    def running_jobs(self) -> list[int]:
        return list(self._running)

    # -- estimates -------------------------------------------------------------------------------

    def learn(self, durations: Iterable[tuple[int, int, int, float]]) -> None:
        """Fold finished jobs' (width, height, steps, unguided seconds per picture) into the estimates."""
        for width, height, steps, seconds in durations:
            self.eta.record(width, height, steps, seconds)

    def queued_text(self, job: Job, lang: str) -> str:
        position = self.queue.position(job.id)
        if position is None:
            return t("queued_next", lang, job_id=job.id)
        eta = duration(self.eta_seconds(job.id))
        return t("queued", lang, job_id=job.id, position=position + 1, eta=eta)

    def eta_seconds(self, job_id: int) -> float:
        position = self.queue.position(job_id)
        if position is None:
            return 0.0
        costs = [self._costs.get(j, 0.0) for j, _ in self.queue.snapshot()[: position + 1]]
        # The work ahead is shared by every slot; the job's own run is not.
        slots = max(1, self._live_workers())
        ahead = eta_for_position(position, self._running_remaining(), costs) - costs[-1]
        return ahead / slots + costs[-1]

    def _running_remaining(self) -> float:
        now = self._clock()
        return sum(max(0.0, estimate - (now - started)) for started, estimate in self._running.values())
