"""Structured logs: one line per event, the job id on every line that concerns a job, no secrets.

The job id travels in a context variable, so everything logged while a job runs (the service,
the engine on the GPU thread, the adapters delivering it) carries `job=<id>` without passing it.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar

current_job: ContextVar[int | None] = ContextVar("easel_job", default=None)

FORMAT = "%(asctime)s %(levelname)s %(name)s job=%(job)s %(message)s"
# Libraries whose INFO lines would print request URLs, and Telegram URLs contain the bot token.
QUIET = ("httpx", "httpcore", "telegram.ext.Updater", "discord.http", "discord.gateway")


class JobFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "job"):
            record.job = current_job.get() or "-"
        return True


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(JobFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
