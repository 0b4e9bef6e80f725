"""Fault injection for the scale-out tests, by wrapping the engine: production code has no hooks.

`FaultyEngine(engine, crash_on="kaboom", slow_on="slowpoke")` draws like `engine`, except that a
job whose prompt contains `crash_on` kills the whole process on the spot (`os._exit(9)`: no cleanup,
no reply, like a machine losing power), and one containing `slow_on` takes SLOW_STEP_S longer a
step, so a test can act while it runs.
"""

from __future__ import annotations

import os
import sys
import time

SLOW_STEP_S = 0.2
CRASH_STATUS = 9


class FaultyEngine:
    """An engine whose `generate` misbehaves on cue; everything else is the wrapped engine's."""

    def __init__(self, engine, crash_on: str | None = None, slow_on: str | None = None) -> None:
        self._engine = engine
        self._crash_on = crash_on
        self._slow_on = slow_on

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def generate(self, request, on_step=None, should_stop=None):
        if self._crash_on and self._crash_on in request.prompt:
            print(f"fault injection: {self._crash_on!r} in the prompt; dying", file=sys.stderr, flush=True)
            os._exit(CRASH_STATUS)
        if self._slow_on and self._slow_on in request.prompt:
            should_stop = _slowed(should_stop)
        return self._engine.generate(request, on_step=on_step, should_stop=should_stop)


def _slowed(should_stop):
    def slow_should_stop() -> bool:
        time.sleep(SLOW_STEP_S)
        return bool(should_stop and should_stop())

    return slow_should_stop
