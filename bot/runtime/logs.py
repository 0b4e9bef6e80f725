"""Structured logs: one line per event, the job id on every line that concerns a job, no secrets.

The job id travels in a context variable, so everything logged while a job runs (the service,
the engine on the GPU thread, the adapters delivering it) carries `job=<id>` without passing it.
"""

from __future__ import annotations

import logging
import re
from contextvars import ContextVar

current_job: ContextVar[int | None] = ContextVar("easel_job", default=None)

FORMAT = "%(asctime)s %(levelname)s %(name)s job=%(job)s %(message)s"
# Libraries whose INFO lines would print request URLs, and Telegram URLs contain the bot token.
QUIET = ("httpx", "httpcore", "telegram.ext.Updater", "discord.http", "discord.gateway")


# A query parameter that carries a secret: `?password=`, `&auth=`, `?token=`...
_SECRET_PARAM = re.compile(r"([?&;][^&=;#]*(?:pass|auth|secret|token)[^&=;#]*=)[^&;#]*", re.IGNORECASE)
# Greedy up to the last '@': a password may itself hold '/' or '@' (base64, unencoded).
_USERINFO = re.compile(r"^([A-Za-z][\w+.-]*://).*@")


def safe_url(url: str | None) -> str:
    """The URL without its credentials, for logs, `easel doctor` and /stats: `user:pass@` and
    `:pass@` become `***@` (redis://, rediss://, unix://), secret query parameters `***`."""
    text = _SECRET_PARAM.sub(r"\1***", url or "")
    return _USERINFO.sub(r"\1***@", text)


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
