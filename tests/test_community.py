"""Community features through the service with the tiny real model: block and sensitive lists,
strikes and the automatic rate limit, cooldown, batches and style presets."""

from __future__ import annotations

from PIL import Image

from bot.core.service import Caller
from bot.language.buttons import Action, button_id
from bot.language.messages import t
from engine.request import seed_for
from tests.support.service import alice, settled, shown_on, started

ADMIN = Caller("telegram", "900", name="root", language="en", chat_id="1")


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def with_clock(app) -> Clock:
    clock = Clock()
    app.service.moderator.clock = clock
    return clock


async def draw(app, caller: Caller, text: str, key: str | None = None):
    return await app.service.handle_text(caller, text, {"chat_id": caller.chat_id}, idempotency_key=key)


async def jobs_of(app, caller: Caller):
    user = await app.db.users.find(caller.platform, caller.user_id)
    return [] if user is None else (await app.db.jobs.list_for_user(user.id, 0, 100))[0]


# -- block lists, strikes, rate limit --------------------------------------------------------------


async def test_blocked_words_are_refused_without_echo_and_repeated_trips_rate_limit_the_user(make_app):
    app, _ = await started(make_app, EASEL_BLOCKED_WORDS="grimdark,re:gore+", EASEL_ADMINS="telegram:900")
    clock = with_clock(app)

    # Words to leave out count too: `--no` is no way around the list.
    for text in ("/draw a fox --no ｇｒｉｍｄａｒｋ", "/draw a GRIM\u200bDARK castle", "/draw g o r e e e fest"):
        reply = await draw(app, alice(), text)
        assert reply.text == t("blocked_prompt", "en") and reply.alert
        assert "grim" not in reply.text.lower() and "gore" not in reply.text.lower()
        clock.now += 10
    assert await jobs_of(app, alice()) == []

    limited = await draw(app, alice(), "/draw a harmless fox")
    assert limited.text == t("rate_limited", "en", wait="29m50s")
    stats = await draw(app, ADMIN, "/stats")
    assert "3 refused descriptions" in stats.text
    assert "telegram:alice in telegram:chat:1 (3 refusals, 30 min left)" in stats.text
    assert app.service.metrics.value("easel_refusals_total", reason="blocked") == 3
    # Per chat: the same member may still draw in another chat.
    elsewhere = Caller("telegram", "100", name="alice", language="en", chat_id="2")
    assert (await draw(app, elsewhere, "/draw a grim\u00addark keep")).text == t("blocked_prompt", "en")
    assert (await draw(app, elsewhere, "/draw a harmless fox")).job_id is not None
    # A parse error never repeats a blocked word back in its example.
    assert (await draw(app, elsewhere, "/draw grimdark --ar 99:1")).text == t("blocked_prompt", "en")
    assert (await draw(app, elsewhere, "/draw a fox --style grimdark")).text == t("blocked_prompt", "en")

    clock.now += 1800
    assert (await draw(app, alice(), "/draw a harmless fox")).job_id is not None
    # Admins meet the list too (they test it), but collect no strikes.
    assert (await draw(app, ADMIN, "/draw grimdark")).text == t("blocked_prompt", "en")
    admin_user = await app.db.users.find("telegram", "900")
    assert await app.db.moderation.strike_times(admin_user.id, "telegram:chat:1", 0) == []


async def test_admins_edit_this_chats_lists_audited_and_other_chats_are_not_affected(make_app):
    app, _ = await started(make_app, EASEL_ADMINS="telegram:900")
    here, elsewhere = alice(), Caller("telegram", "100", name="alice", language="en", chat_id="2")

    assert (await draw(app, here, "/block add teapot")).text == t("not_admin", "en")
    added = await draw(app, ADMIN, "/block add Teapot")
    assert added.text == t("wordlist_added", "en", list=t("list.blocked", "en"), term="Teapot")
    assert (await draw(app, ADMIN, "/block add Teapot")).text == t("wordlist_exists", "en", list="blocked words")
    assert (await draw(app, here, "/draw a ｔｅａｐｏｔ")).text == t("blocked_prompt", "en")
    assert (await draw(app, elsewhere, "/draw a teapot")).job_id is not None

    listing = await draw(app, ADMIN, "/block list")
    assert "Teapot" in listing.text and "(1)" in listing.text
    removed = await draw(app, ADMIN, "/block remove Teapot")
    assert removed.text == t("wordlist_removed", "en", list="blocked words", term="Teapot")
    assert (await draw(app, here, "/draw a teapot")).job_id is not None
    invalid = await draw(app, ADMIN, "/block add re:(")
    assert invalid.text.startswith(t("wordlist_invalid", "en", reason="")[:20])

    audit = [(e.action, e.target, e.details) for e in reversed(await app.db.audit.recent())]
    assert audit == [
        ("blocked_add", "telegram:chat:1", {"list": "blocked", "term": "Teapot"}),
        ("blocked_remove", "telegram:chat:1", {"list": "blocked", "term": "Teapot"}),
    ]


async def test_a_discord_server_manager_keeps_the_servers_lists(make_app):
    app, _ = await started(make_app)
    manager = Caller("discord", "5", name="mod", chat_id="10", guild_id="77", chat_admin=True)
    member = Caller("discord", "6", name="member", chat_id="11", guild_id="77")
    app.service.register(type(app.service.adapters["telegram"])("discord"))

    assert (await draw(app, manager, "/block add kraken")).text.startswith("Added")
    # Another channel of the same server: the server's list applies.
    assert (await draw(app, member, "/draw a kraken")).text == t("blocked_prompt", "en")
    assert (await draw(app, member, "/block remove kraken")).text == t("not_admin", "en")


async def test_the_block_list_file_is_read_again_when_it_changes(make_app, tmp_path):
    words = tmp_path / "blocked.txt"
    words.write_text("# one term per line\nmoth\n", encoding="utf-8")
    app, _ = await started(make_app, EASEL_BLOCKED_WORDS_FILE=str(words))
    assert (await draw(app, alice(), "/draw a moth")).text == t("blocked_prompt", "en")
    words.write_text("butterfly\n", encoding="utf-8")
    import os

    os.utime(words, (5, 5))
    assert (await draw(app, alice(), "/draw a moth")).job_id is not None
    assert (await draw(app, alice(), "/draw a BUTTERFLY")).text == t("blocked_prompt", "en")


async def test_regular_expressions_are_for_bot_admins_and_a_resent_update_strikes_once(make_app):
    app, _ = await started(make_app, EASEL_BLOCKED_WORDS="grimdark", EASEL_ADMINS="discord:1")
    manager = Caller("discord", "5", name="mod", chat_id="10", guild_id="77", chat_admin=True)
    admin = Caller("discord", "1", name="root", chat_id="10", guild_id="77")
    assert (await draw(app, manager, "/block add re:(a+)+$")).text == t("wordlist_regex_admins", "en")
    assert (await draw(app, admin, "/block add re:kra+ken")).text.startswith("Added")

    member = Caller("discord", "6", name="member", chat_id="11", guild_id="77")
    for _ in range(2):
        assert (await draw(app, member, "/draw grimdark", key="interaction-1")).text == t("blocked_prompt", "en")
    user = await app.db.users.find("discord", "6")
    assert len(await app.db.moderation.strike_times(user.id, "discord:guild:77", 0)) == 1
    # The admin's regular expression applies to everyone in the server, and a fresh prompt strikes.
    assert (await draw(app, member, "/draw kraaaken")).text == t("blocked_prompt", "en")
    assert len(await app.db.moderation.strike_times(user.id, "discord:guild:77", 0)) == 2


async def test_a_style_leaves_room_for_its_template(make_app):
    app, _ = await started(make_app)
    template = len(app.service.styles.get("photo").prompt) - len("{prompt}")
    budget = app.service.profile.max_prompt_chars - template
    reply = await draw(app, alice(), "/draw " + "x" * (budget + 1) + " --style photo")
    assert reply.text == t("error.prompt_too_long", "en", length=budget + 1, limit=budget)
    assert (await draw(app, alice(), "/draw " + "x" * budget + " --style photo --steps 1")).job_id


# -- sensitive pictures ---------------------------------------------------------------------------------


async def test_sensitive_prompts_go_out_behind_a_spoiler_and_only_in_nsfw_channels_when_asked(make_app):
    app, adapter = await started(make_app, EASEL_SENSITIVE_WORDS="swimsuit", EASEL_NSFW_CHANNELS_ONLY="true")

    reply = await draw(app, alice(), "/draw a cat in a swimsuit --steps 1")
    job = await settled(app, reply.job_id)
    delivery = adapter.delivered[-1]
    assert job.sensitive and delivery.spoiler and t("spoiler_note", "en") in delivery.notes

    plain = await draw(app, alice(), "/draw a cat --steps 1")
    await settled(app, plain.job_id)
    assert not adapter.delivered[-1].spoiler

    # A variation of a sensitive picture is sensitive too; words only left out make nothing sensitive.
    vary = await app.service.press(
        alice(), button_id(Action.VARY_SUBTLE, job.id), {"chat_id": "1"}, message_id=shown_on(job.id)
    )
    assert (await settled(app, vary.job_id)).sensitive and adapter.delivered[-1].spoiler
    avoided = await draw(app, alice(), "/draw a cat --no swimsuit --steps 1")
    assert not (await settled(app, avoided.job_id)).sensitive

    sfw = Caller("discord", "5", chat_id="10", guild_id="77", nsfw_channel=False)
    nsfw = Caller("discord", "5", chat_id="12", guild_id="77", nsfw_channel=True)
    assert (await draw(app, sfw, "/draw a swimsuit")).text == t("sensitive_nsfw_only", "en")
    assert (await draw(app, nsfw, "/draw a swimsuit --steps 1")).job_id is not None


# -- cooldown ------------------------------------------------------------------------------------------


async def test_cooldown_refuses_a_fast_second_request_with_the_wait_but_not_a_resent_one(make_app):
    app, _ = await started(make_app, EASEL_COOLDOWN_S="45", EASEL_ADMINS="telegram:900")
    clock = with_clock(app)

    first = await draw(app, alice(), "/draw a fox --steps 1", key="m1")
    clock.now += 15
    again = await draw(app, alice(), "/draw a fox --steps 1", key="m1")  # the same update, re-sent
    second = await draw(app, alice(), "/draw an owl", key="m2")
    assert again.job_id == first.job_id
    assert second.text == t("cooldown", "en", wait="30s") and second.job_id is None
    clock.now += 30
    assert (await draw(app, alice(), "/draw an owl --steps 1", key="m3")).job_id is not None
    # Admins never wait; a refused request (quota) does not start a cooldown.
    assert (await draw(app, ADMIN, "/draw a")).job_id and (await draw(app, ADMIN, "/draw b")).job_id
    assert app.service.metrics.value("easel_refusals_total", reason="cooldown") == 1


# -- batches -----------------------------------------------------------------------------------------


async def test_a_batch_paints_n_pictures_costs_n_and_each_picture_has_its_buttons(make_app):
    app, adapter = await started(make_app, EASEL_DAILY_QUOTA="6")

    reply = await draw(app, alice(), "/draw a lighthouse --n 4 --seed 40 --steps 1")
    job = await settled(app, reply.job_id)
    assert len(job.image_paths) == 4 and job.seed == 40
    user = await app.db.users.find("telegram", "100")
    assert await app.db.quota.used(user.id, app.service.today()) == 4
    for index, path in enumerate(job.image_paths):
        with Image.open(app.service.images.resolve(path)) as image:
            assert f"Seed: {40 + index}" in image.text["parameters"]

    delivery = adapter.delivered[-1]
    assert len(delivery.image_paths) == 4 and "seeds 40–43" in delivery.caption
    ids = [[button for button, _ in row] for row in delivery.buttons]
    assert ids[0] == [button_id(Action.UPSCALE, job.id, i) for i in range(4)]
    assert ids[1] == [button_id(Action.VARY_STRONG, job.id, i) for i in range(4)]
    assert ids[2] == [button_id(action, job.id) for action in (Action.REROLL, Action.PARAMS, Action.DELETE)]
    assert [label for (label,) in [[label] for _, label in delivery.buttons[0]]] == ["U1", "U2", "U3", "U4"]

    too_many = await draw(app, alice(), "/draw more --n 3")
    assert too_many.text == t("quota_not_enough", "en", cost=3, left=2, hint=t("fits_count", "en", count=2))

    upscale = await app.service.press(
        alice(), button_id(Action.UPSCALE, job.id, 2), {"chat_id": "1"}, message_id=shown_on(job.id)
    )
    child = await settled(app, upscale.job_id)
    assert child.count == 1 and child.seed == seed_for(40, 2) and child.parent_id == job.id
    assert child.request["source_image"] == str(app.service.images.resolve(job.image_paths[2]))
    assert await app.db.quota.used(user.id, app.service.today()) == 5

    params = await app.service.press(
        alice(), button_id(Action.PARAMS, job.id), {"chat_id": "1"}, message_id=shown_on(job.id)
    )
    assert "Seed: 40–43" in params.text
    stale = await app.service.press(alice(), f"easel:upscale:{job.id}:9", {"chat_id": "1"}, message_id=shown_on(job.id))
    assert stale.text == t("stale_button", "en")
    gone = await app.service.press(
        alice(), button_id(Action.DELETE, job.id), {"chat_id": "1"}, message_id=shown_on(job.id)
    )
    assert gone.delete_message
    assert not any(app.service.images.resolve(path).exists() for path in job.image_paths)


async def test_hash_n_picks_a_picture_only_in_reply_to_a_whole_batch_message(make_app):
    app, _ = await started(make_app, EASEL_DAILY_QUOTA="10", EASEL_COOLDOWN_S="0")
    reply = await draw(app, alice(), "/draw a lighthouse --n 2 --seed 40 --steps 1")
    job = await settled(app, reply.job_id)
    pictures = [str(app.service.images.resolve(path)) for path in job.image_paths]
    # The batch's first picture also went out as a message of its own (Telegram's album).
    await app.service.record_message(job.id, "telegram", "1", "single-0", picture=0)

    async def vary(text: str, message_id: str):
        varied = await app.service.vary_from_picture(alice(), text, "1", message_id, {"chat_id": "1"}, None)
        assert varied.job_id is not None, varied.text
        return await app.db.jobs.get(varied.job_id)

    on_single = await vary("#2 at night", "single-0")
    assert (on_single.request["prompt"], on_single.request["source_image"]) == ("#2 at night", pictures[0])
    on_batch = await vary("#2 at dawn", shown_on(job.id))
    assert (on_batch.request["prompt"], on_batch.request["source_image"]) == ("at dawn", pictures[1])


async def test_pictures_missing_from_a_batch_result_are_not_charged(make_app):
    """A worker of an older version draws one picture of a batch: the rest is given back."""
    app, adapter = await started(make_app)
    run = app.service.worker.run

    async def older_worker(job_id, request, on_step=None):
        result = await run(job_id, request, on_step)
        result.images = result.images[:1]
        return result

    app.service.worker.run = older_worker
    reply = await draw(app, alice(), "/draw a fox --n 3 --steps 1")
    job = await settled(app, reply.job_id)
    user = await app.db.users.find("telegram", "100")
    assert len(job.image_paths) == 1 and await app.db.quota.used(user.id, app.service.today()) == 1
    assert len(adapter.delivered[-1].image_paths) == 1
    assert t("missing_note", "en", drawn=1, count=3) in adapter.delivered[-1].notes


async def test_batch_counts_are_checked_with_an_example(make_app):
    app, _ = await started(make_app)
    reply = await draw(app, alice(), "/draw a fox --n 9")
    assert reply.text.startswith(t("error.count_range", "en", value=9, min=1, max=4))
    assert "/draw a fox --n 4" in reply.text
    assert (await draw(app, alice(), "/draw a fox --n two")).text.startswith(
        t("error.not_integer", "en", flag="--n", value="two")
    )


async def test_a_cancelled_batch_gives_back_its_whole_cost(make_app):
    app, _ = await started(make_app)
    app.service.background.loops["dispatch"].cancel()  # nothing starts: the batch stays queued
    reply = await draw(app, alice(), "/draw a fox --n 3")
    user = await app.db.users.find("telegram", "100")
    assert await app.db.quota.used(user.id, app.service.today()) == 3
    await app.service.handle_text(alice(), f"/cancel #{reply.job_id}", {"chat_id": "1"})
    assert await app.db.quota.used(user.id, app.service.today()) == 0


# -- styles -------------------------------------------------------------------------------------------


async def test_a_style_changes_the_prompt_the_engine_receives(make_app):
    app, _ = await started(make_app)
    reply = await draw(app, alice(), "/draw a crane over a lake --style ink --steps 1")
    job = await settled(app, reply.job_id)
    expected = app.service.styles.get("ink").prompt.replace("{prompt}", "a crane over a lake")
    assert job.request["prompt"] == expected and job.request["style"] == "ink"
    with Image.open(app.service.images.resolve(job.image_paths[0])) as image:
        assert image.text["parameters"].startswith(expected)  # what the engine validated and drew
    assert (job.request["width"], job.request["height"]) == app.service.profile.aspect_ratios["2:3"]

    unknown = await draw(app, alice(), "/draw a crane --style vaporwave")
    assert unknown.text.startswith(t("unknown_style", "en", name="vaporwave", styles="photo, anime")[:40])
    listing = await draw(app, alice(), "/styles")
    assert all(name in listing.text for name in ("photo", "anime", "watercolor", "ink", "cinematic"))
    chinese = await draw(app, Caller("telegram", "200", language="zh-CN", chat_id="1"), "/styles")
    assert "中国水墨画" in chinese.text
