"""The prompt enhancer: a short prompt rewritten into a detailed description by any OpenAI-compatible
chat endpoint (a local Ollama, vLLM or llama.cpp server, or a hosted one), before the job is stored.

Z-Image-Turbo draws best from long, detailed prompts (its authors' demo rewrites prompts with an LLM),
and at guidance 0 a negative prompt does nothing, so `--no X` goes into the instruction as "without X".
Off unless EASEL_ENHANCER_URL is set.  It never blocks the event loop (aiohttp) or the GPU (it runs
before the job is queued), it gives up after EASEL_ENHANCER_TIMEOUT_S, and any failure draws from the
user's own words with a note.  What it writes is moderated like user text by the intake.
"""

from __future__ import annotations

import logging
import re
from collections import OrderedDict
from dataclasses import dataclass

import aiohttp

from bot.runtime.settings import Settings

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "You expand short image prompts for a text-to-image model. Rewrite the user's description as one "
    "detailed paragraph of 40 to 90 words: the subject, its setting, composition, lighting, colours, "
    "materials and style. Keep every word and name the user chose, and what they meant; add detail, "
    "never change the subject. Write in the same language as the user's description (Chinese stays "
    "Chinese, English stays English). Describe only what is visible. Answer with the paragraph alone: "
    "no preamble, no quotes, no lists."
)
WITHOUT = "The picture must not show: {negative}. Leave these out entirely and do not mention them."
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
CACHE_SIZE = 256


class EnhancerFailed(Exception):
    """The endpoint did not give a usable expansion; `reason` is "timeout" or "failed"."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Expansion:
    text: str | None  # None: draw from the user's words
    note: str | None = None  # why not: "timeout", "failed", "blocked" (a message key's last part)


class PromptEnhancer:
    def __init__(self, url: str, model: str, key: str | None = None, timeout_s: float = 6.0) -> None:
        url = url.rstrip("/")
        self.url = url if url.endswith("/chat/completions") else url + "/chat/completions"
        self.model = model
        self._key = key
        self.timeout_s = timeout_s
        # The last expansion of the same words: used when the endpoint fails, so a flaky endpoint
        # still gives detailed prompts.  A working endpoint is always asked anew.
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> PromptEnhancer | None:
        if not settings.enhancer_url:
            return None
        key = settings.enhancer_key.get_secret_value() if settings.enhancer_key else None
        return cls(settings.enhancer_url, settings.enhancer_model, key, settings.enhancer_timeout_s)

    async def expand(self, prompt: str, negative: str = "") -> Expansion:
        """An expansion of `prompt`, or None and why not.  Never raises for the endpoint's faults."""
        try:
            text = await self._ask(prompt, negative)
        except EnhancerFailed as failure:
            log.warning("prompt enhancer %s; drawing from the user's words", failure)
            cached = self._cache.get((prompt, negative))
            return Expansion(cached) if cached else Expansion(None, failure.reason)
        self._cache[(prompt, negative)] = text
        self._cache.move_to_end((prompt, negative))
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return Expansion(text)

    def forget(self, prompt: str, negative: str = "") -> None:
        """Drop a cached expansion (one that moderation refused)."""
        self._cache.pop((prompt, negative), None)

    async def _ask(self, prompt: str, negative: str) -> str:
        instructions = INSTRUCTIONS + (" " + WITHOUT.format(negative=negative) if negative else "")
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": instructions}, {"role": "user", "content": prompt}],
            "temperature": 0.7,
            "max_tokens": 400,
            "stream": False,
        }
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(self.url, json=body, headers=headers) as response,
            ):
                if response.status != 200:
                    raise EnhancerFailed("failed", f"HTTP {response.status}")
                data = await response.json(content_type=None)
        except TimeoutError as error:
            raise EnhancerFailed("timeout", f"no answer in {self.timeout_s:g}s") from error
        except (aiohttp.ClientError, ValueError) as error:
            raise EnhancerFailed("failed", f"{type(error).__name__}: {error}"[:200]) from error
        return cleaned(data)


def cleaned(data: object) -> str:
    """The paragraph from an OpenAI-style answer: thinking, quotes and blank space taken out."""
    try:
        content = data["choices"][0]["message"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError) as error:
        raise EnhancerFailed("failed", "no choices[0].message.content in the answer") from error
    if not isinstance(content, str):
        raise EnhancerFailed("failed", "the answer's content is not text")
    text = " ".join(_THINKING.sub("", content).split()).strip().strip("\"'“”「」")
    if not text:
        raise EnhancerFailed("failed", "an empty answer")
    return text
