"""The prompt enhancer through a fake OpenAI-compatible server on 127.0.0.1, with the tiny real model:
success, timeout, a 500, and an expansion holding a blocked word."""

from __future__ import annotations

import asyncio

import pytest
from PIL import Image

from bot.core.enhancer import PromptEnhancer, cleaned
from bot.language.buttons import Action, button_id
from bot.language.messages import t
from engine.enhance import enhance_prompts
from engine.request import TINY, DrawRequest, validate
from tests.fakes.chat_server import FakeChatServer
from tests.support.service import alice, bob, settled, shown_on, started

EXPANSION = "a small red fox curled up in fresh snow at dawn, soft golden light, shallow depth of field"


@pytest.fixture
async def server():
    fake = await FakeChatServer().start()
    fake.reply = lambda messages: EXPANSION
    yield fake
    await fake.stop()


def enhancer_settings(server: FakeChatServer, **extra) -> dict:
    return {"EASEL_ENHANCER_URL": server.url, "EASEL_ENHANCER_MODEL": "tiny-llm", **extra}


async def drawn(app, adapter, text: str, caller=None, count: int = 1):
    reply = await app.service.handle_text(caller or alice(), text, {"chat_id": "1"})
    await adapter.wait_until(lambda: len(adapter.delivered) == count)
    job = await settled(app, reply.job_id)
    return job, DrawRequest.from_dict(job.request), adapter.delivered[-1]


async def test_an_expansion_is_drawn_kept_in_the_job_and_shown_beside_the_users_words(make_app, server):
    app, adapter = await started(make_app, **enhancer_settings(server, EASEL_ENHANCER_KEY="sk-test"))
    job, request, delivery = await drawn(app, adapter, "/draw a fox --no text, frames --seed 3")
    assert request.prompt == "a fox" and request.expanded == EXPANSION
    sent = server.requests[0]
    assert sent["model"] == "tiny-llm" and sent["messages"][-1] == {"role": "user", "content": "a fox"}
    assert "without" in sent["messages"][0]["content"].lower() or "not show" in sent["messages"][0]["content"]
    assert "text, frames" in sent["messages"][0]["content"] and "same language" in sent["messages"][0]["content"]
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    with Image.open(delivery.image_paths[0]) as picture:
        parameters = picture.text["parameters"]
    assert parameters.startswith(EXPANSION) and 'User prompt: "a fox"' in parameters
    params = await app.service.press(alice(), button_id(Action.PARAMS, job.id), {}, message_id=shown_on(job.id))
    assert "a fox" in params.text and EXPANSION in params.text
    story = await app.service.handle_text(alice(), f"/show {job.id}", {})
    assert EXPANSION[:40] in story.text
    assert delivery.notes == []

    # Reroll reuses the expansion; /draw again asks anew.
    again = await app.service.press(alice(), button_id(Action.REROLL, job.id), {}, message_id=shown_on(job.id))
    rerolled = DrawRequest.from_dict((await app.db.jobs.get(again.job_id)).request)
    assert rerolled.expanded == EXPANSION and len(server.requests) == 1
    await adapter.wait_until(lambda: len(adapter.delivered) == 2)
    server.reply = lambda messages: "a fox in a snowstorm, wide shot"
    _, redrawn, _ = await drawn(app, adapter, "/draw a fox --seed 3", count=3)
    assert redrawn.expanded == "a fox in a snowstorm, wide shot" and len(server.requests) == 2


async def test_a_slow_enhancer_times_out_without_blocking_anyone(make_app, server):
    server.delay_s = 3.0
    app, adapter = await started(make_app, **enhancer_settings(server, EASEL_ENHANCER_TIMEOUT_S="0.5"))
    draw = asyncio.create_task(app.service.handle_text(alice(), "/draw a fox --seed 3", {"chat_id": "1"}))
    await asyncio.sleep(0.1)
    quota = await app.service.handle_text(bob(), "/quota", {})  # the loop keeps serving others meanwhile
    assert quota.text and not draw.done()
    reply = await draw
    await adapter.wait_until(lambda: len(adapter.delivered) == 1)
    job = await settled(app, reply.job_id)
    assert DrawRequest.from_dict(job.request).expanded == "" and job.request["enhancer"] == "timeout"
    assert adapter.delivered[0].notes == [t("enhancer_note.timeout", "en")]


async def test_a_failing_enhancer_draws_from_the_words_or_from_its_last_expansion(make_app, server):
    app, adapter = await started(make_app, **enhancer_settings(server))
    server.status = 500
    job, request, delivery = await drawn(app, adapter, "/draw a lighthouse --seed 1")
    assert request.expanded == "" and job.request["enhancer"] == "failed"
    assert delivery.notes == [t("enhancer_note.failed", "en")]
    server.status = 200
    _, request, _ = await drawn(app, adapter, "/draw a fox --seed 2", count=2)
    assert request.expanded == EXPANSION
    server.status = 500  # the same words again while the endpoint is down: its last expansion of them
    job, request, delivery = await drawn(app, adapter, "/draw a fox --seed 4", count=3)
    assert request.expanded == EXPANSION and "enhancer" not in job.request and delivery.notes == []


async def test_an_expansion_with_a_blocked_word_falls_back_to_the_users_words_without_a_strike(make_app, server):
    server.reply = lambda messages: "a fox in a grimdark ruin, rain"
    settings = enhancer_settings(server, EASEL_BLOCKED_WORDS="grimdark", EASEL_STRIKE_LIMIT="1")
    app, adapter = await started(make_app, **settings)
    job, request, delivery = await drawn(app, adapter, "/draw a fox --seed 3")
    assert request.expanded == "" and job.request["enhancer"] == "blocked"
    assert delivery.notes == [t("enhancer_note.blocked", "en")]
    # Not the user's words: no strike, so the next request is taken (a strike limit of 1 would refuse it).
    server.reply = lambda messages: EXPANSION
    _, request, _ = await drawn(app, adapter, "/draw a fox --seed 5", count=2)
    assert request.expanded == EXPANSION


async def test_raw_never_asks_the_enhancer(make_app, server):
    app, adapter = await started(make_app, **enhancer_settings(server))
    _, request, _ = await drawn(app, adapter, "/draw a fox --raw --seed 3")
    assert request.expanded == "" and server.requests == []


def test_the_engine_draws_the_expansion_unless_raw():
    request = validate(DrawRequest("a fox", expanded=f"  {EXPANSION}\u200b "), TINY)
    assert enhance_prompts(request, TINY)[0] == f"{EXPANSION}, {TINY.quality_suffix}"
    raw = validate(DrawRequest("a fox", expanded=EXPANSION, enhance=False), TINY)
    assert raw.expanded == "" and enhance_prompts(raw, TINY)[0] == "a fox"
    long = validate(DrawRequest("a fox", expanded="word " * 1000), TINY)
    assert len(long.expanded) <= TINY.max_expansion_chars and long.expanded.endswith("word")


def test_answers_are_cleaned_and_bad_ones_refused():
    answer = {"choices": [{"message": {"content": "<think>hmm</think>\n “一只红狐狸，雪地，清晨” "}}]}
    assert cleaned(answer) == "一只红狐狸，雪地，清晨"
    for bad in ({}, {"choices": []}, {"choices": [{"message": {"content": None}}]}, {"choices": [{"message": {}}]}):
        with pytest.raises(Exception, match="failed"):
            cleaned(bad)
    assert PromptEnhancer("http://x/v1/", "m").url == "http://x/v1/chat/completions"
    assert PromptEnhancer("http://x/v1/chat/completions", "m").url == "http://x/v1/chat/completions"


async def test_no_expansion_is_asked_for_a_job_over_quota_or_at_max_pending(make_app, server):
    # Not started: an accepted job stays queued.  Each refusal comes before the language model's call.
    app = await make_app(**enhancer_settings(server, EASEL_MAX_PENDING=1, EASEL_DAILY_QUOTA=2))
    assert (await app.service.handle_text(alice(), "/draw a fox", {"chat_id": "1"})).job_id is not None
    assert len(server.requests) == 1
    pending = await app.service.handle_text(alice(), "/draw a wolf", {"chat_id": "1"})
    assert pending.alert and pending.text.startswith(t("pending_limit", "en").split("{")[0])
    big = await app.service.handle_text(bob(), "/draw a wolf --n 4", {"chat_id": "1"})  # 4 units, 2 a day
    assert big.alert and big.job_id is None
    assert len(server.requests) == 1
