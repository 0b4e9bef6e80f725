"""`ScaleSettings`: the bot's settings plus the knobs both sides of the Redis hand-off agree on.

Read once at start like `Settings` (environment, then `.env`); nothing else reads the environment.
"""

from __future__ import annotations

import os
import socket

from pydantic import Field, model_validator

from bot.runtime.settings import Settings

# However big a job, a worker gives it up after this long (unless one unit's timeout is longer).
MAX_JOB_TIMEOUT_S = 6 * 3600.0


class ScaleSettings(Settings):
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", alias="EASEL_WORKER_ID")
    heartbeat_s: float = Field(default=2.0, gt=0, alias="EASEL_HEARTBEAT_S")
    claim_idle_s: float = Field(default=30.0, gt=0, alias="EASEL_CLAIM_IDLE_S")
    max_deliveries: int = Field(default=3, ge=1, alias="EASEL_MAX_DELIVERIES")
    result_ttl_s: int = Field(default=86_400, ge=60, alias="EASEL_RESULT_TTL_S")
    job_timeout_s: float = Field(default=900.0, gt=0, alias="EASEL_JOB_TIMEOUT_S")
    # A LoRA job whose workers all left waits this long for one to come back (a restart loads the
    # model before it announces itself) before it is failed and refunded.
    lora_wait_s: float = Field(default=300.0, ge=0, alias="EASEL_LORA_WAIT_S")

    @model_validator(mode="after")
    def _claim_after_heartbeats(self) -> ScaleSettings:
        if self.claim_idle_s < 3 * self.heartbeat_s:
            raise ValueError(
                f"EASEL_CLAIM_IDLE_S ({self.claim_idle_s:g}) must be at least 3x EASEL_HEARTBEAT_S "
                f"({self.heartbeat_s:g}), or jobs of live workers would be taken away from them"
            )
        return self

    @classmethod
    def from_settings(cls, settings: Settings) -> ScaleSettings:
        """The scale knobs around already-built settings (which win over the environment)."""
        if isinstance(settings, cls):
            return settings
        values = settings.model_dump(by_alias=True, exclude_unset=True)
        return cls(**values)

    def job_timeout_for(self, cost: int) -> float:
        """How long a job of `cost` work units (bot/core/cost.py) may run on a worker before the worker
        gives it up: EASEL_JOB_TIMEOUT_S per unit, so a big job that is merely slow is not taken for
        a hung GPU (and dead-lettered as a system failure); never less than one unit's, never more
        than MAX_JOB_TIMEOUT_S."""
        return max(self.job_timeout_s, min(self.job_timeout_s * max(1, cost), MAX_JOB_TIMEOUT_S))

    @property
    def worker_ttl_s(self) -> float:
        """How long a worker's announcement lives without a refresh."""
        return max(2.0, 3 * self.heartbeat_s)
