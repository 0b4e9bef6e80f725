"""A fake OpenAI-compatible chat endpoint on 127.0.0.1, for the prompt enhancer's tests.

It speaks what Ollama, vLLM and llama.cpp's server speak: `POST /v1/chat/completions` with
`{"model", "messages", ...}`, answered `{"choices": [{"message": {"role": "assistant", "content"}}]}`.
A test sets what it answers (`reply`), how long it waits first (`delay_s`) or an HTTP status to fail
with (`status`), and reads every request it was sent (`requests`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web


class FakeChatServer:
    def __init__(self) -> None:
        self.reply: Callable[[list[dict[str, Any]]], str] = lambda messages: "a detailed picture"
        self.delay_s = 0.0
        self.status = 200
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeChatServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._complete)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.json_response({"error": {"message": "injected failure"}}, status=self.status)
        content = self.reply(body["messages"])
        return web.json_response(
            {
                "id": f"chatcmpl-{len(self.requests)}",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
            }
        )
