"""The local console: the command language in a terminal, against the same service.

Pictures land in the data dir and their paths are printed.  On end of input it waits until every
accepted job has been delivered, so `echo "/draw a fox" | easel console` works in scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
import threading
from typing import TextIO

from bot.contract import Caller, ChatService, Delivery
from bot.language.messages import t
from storage.jobs import Job

BAR_WIDTH = 24


class ConsoleAdapter:
    platform = "console"

    def __init__(self, service: ChatService, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
        self.service = service
        self._in = stdin
        self._out = stdout
        self._caller = Caller("console", getpass.getuser(), name=getpass.getuser(), chat_id="console")
        self._outstanding: set[int] = set()
        self._settled = asyncio.Event()

    def _print(self, text: str) -> None:
        self._out.write(text + "\n")
        self._out.flush()

    async def run(self) -> None:
        self._print("easel console: type /help, or just describe a picture. Ctrl-D to quit.")
        if await asyncio.to_thread(self._full_model_without_gpu):
            self._print(t("console_no_gpu_hint", self.service.settings.default_language))
        await self._track_recovered()
        line_number = 0
        while True:
            line = await self._read_line()
            if not line:
                break
            line_number += 1
            if not line.strip():
                continue
            reply = await self.service.handle_text(self._caller, line, {"chat_id": "console"})
            if reply is None:
                continue
            self._print(reply.text)
            if reply.job_id is not None:
                self._outstanding.add(reply.job_id)
                await self.service.attach_status_message(reply.job_id, status_message_id="console")
        await self._wait_for_outstanding()

    async def _read_line(self) -> str:
        """One line of input, read on a daemon thread: a stop (SIGTERM, Ctrl-C) must not wait for
        someone to press Enter, as the loop's own thread pool would at exit."""
        loop = asyncio.get_running_loop()
        line = loop.create_future()

        def read() -> None:
            try:
                result: object = self._in.readline()
            except Exception as error:  # handed to the loop, raised there
                result = error
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody is waiting
                loop.call_soon_threadsafe(_settle, line, result)

        threading.Thread(target=read, name="easel-console-input", daemon=True).start()
        return await line

    def _full_model_without_gpu(self) -> bool:
        from engine.device import probe_device

        return self.service.profile.model_gb > 4 and not probe_device(self.service.settings.device).is_gpu

    async def _track_recovered(self) -> None:
        user = await self.service.user_for(self._caller)
        for job in await self.service.db.jobs.pending_for_user(user.id):
            self._outstanding.add(job.id)
        for job in await self.service.db.jobs.undelivered():
            if job.platform == self.platform:
                self._outstanding.add(job.id)

    async def _wait_for_outstanding(self) -> None:
        while self._outstanding:
            self._settled.clear()
            for job_id in list(self._outstanding):
                job = await self.service.db.jobs.get(job_id)
                settled = job is None or job.delivered_at or job.delivery_error  # sent, or given up
                if settled or job.status.value == "cancelled" or job.deleted:
                    self._outstanding.discard(job_id)
            if self._outstanding:
                # Delivery is recorded just after the send; poll briefly rather than trust the event alone.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        await self._settled.wait()

    async def show_status(self, job: Job, text: str) -> None:
        self._print(f"  {_bar(text)}")

    async def deliver(self, delivery: Delivery) -> None:
        lines = [delivery.caption, *(f"  -> {path}" for path in delivery.image_paths), *delivery.notes]
        self._print("\n".join(lines))
        self._settled.set()

    async def tell_admin(self, user_id: str, text: str) -> bool:
        self._print(f"[admin] {text}")
        return True

    async def notify_failure(self, job: Job, text: str) -> None:
        self._print(f"#{job.id}: {text}")
        self._settled.set()


def _settle(future: asyncio.Future, result: object) -> None:
    if future.done():  # cancelled: the console is stopping
        return
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


def _bar(text: str) -> str:
    """Prefix step messages ("step k of N", "第 k/N 步") with a progress bar."""
    import re

    match = re.search(r"(\d+)\D+(\d+)\D*$", text)
    if not match:
        return text
    step, total = int(match.group(1)), max(1, int(match.group(2)))
    filled = BAR_WIDTH * step // total
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {text}"
