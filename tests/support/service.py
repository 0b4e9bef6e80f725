"""The job service without a chat platform: a recording adapter, the test callers, and waiting for delivery."""

from __future__ import annotations

import asyncio

from bot.core.service import Caller, Delivery


class RecordingAdapter:
    """A stand-in chat platform that records what the service asks it to show."""

    def __init__(self, platform: str = "telegram", service=None) -> None:
        self.platform = platform
        self.service = service  # set: each delivery is recorded as posted message `shown_on(job id)`
        self.statuses: list[tuple[int, str]] = []
        self.delivered: list[Delivery] = []
        self.failures: list[tuple[int, str]] = []
        self.fail_deliveries = 0
        self.changed = asyncio.Event()

    async def show_status(self, job, text):
        self.statuses.append((job.id, text))

    async def deliver(self, delivery):
        if self.fail_deliveries:
            self.fail_deliveries -= 1
            raise ConnectionError("platform down (injected)")
        if self.service is not None:  # as a real adapter does: buttons are honoured on this message only
            chat = str(delivery.job.reply_to.get("chat_id", "1"))
            whole_batch = len(delivery.image_paths) > 1
            await self.service.record_message(
                delivery.job.id, self.platform, chat, shown_on(delivery.job.id), whole_batch=whole_batch
            )
        self.delivered.append(delivery)
        self.changed.set()

    async def notify_failure(self, job, text):
        self.failures.append((job.id, text))
        self.changed.set()

    async def wait_until(self, predicate, timeout: float = 30.0):
        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout)


def shown_on(job_id: int) -> str:
    """The message id RecordingAdapter posts a job's pictures as."""
    return f"m{job_id}"


def alice(**extra) -> Caller:
    return Caller("telegram", "100", name="alice", language="en", chat_id="1", **extra)


def bob() -> Caller:
    return Caller("telegram", "200", name="bob", language="zh-CN", chat_id="1")


def carol() -> Caller:
    return Caller("telegram", "300", name="carol", language="en", chat_id="1")


async def settled(app, job_id: int, timeout: float = 10.0):
    """The job once its delivery has been recorded (delivery is marked just after the send)."""
    for _ in range(int(timeout / 0.02)):
        job = await app.db.jobs.get(job_id)
        if job.delivered_at:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} was never marked delivered")


async def started(make_app, **settings):
    app = await make_app(**settings)
    adapter = RecordingAdapter(service=app.service)
    app.service.register(adapter)
    await app.service.start()
    return app, adapter
