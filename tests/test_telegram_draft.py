"""`--draft`, `--chaos` and Enhance on Telegram: the real app behind python-telegram-bot and the fake
Bot API server (tests/fakes/telegram_server.py)."""

from __future__ import annotations

from bot.language.buttons import Action, button_id
from engine.request import TINY
from tests.support.telegram_harness import ALICE, easel, jobs_of, picture, press, said, settled, tg

__all__ = ["easel", "tg"]  # fixtures


def button_data(call) -> list[str]:
    return [b["callback_data"] for row in call.params["reply_markup"]["inline_keyboard"] for b in row]


async def test_a_draft_is_enhanced_by_its_button_and_by_a_reply(easel, tg):
    app, _ = await easel.start(EASEL_MAX_PENDING=10)
    said(tg, ALICE, ALICE, "/draw a harbour at dawn --draft --chaos 30 --seed 4")
    photo = await picture(tg, ALICE)
    [draft] = await jobs_of(app, ALICE)
    draft = await settled(app, draft.id)
    assert draft.request["draft"] and draft.request["chaos"] == 30
    assert (draft.request["width"], draft.request["height"], draft.request["steps"]) == (128, 128, TINY.draft_steps)
    assert button_data(photo)[0] == button_id(Action.ENHANCE, draft.id)
    message_id = photo.result["message_id"]

    answer = await press(tg, ALICE, ALICE, message_id, button_id(Action.ENHANCE, draft.id))
    assert answer.ok
    mark = len(tg.calls)
    said(tg, ALICE, ALICE, "enhance", reply_to_message_id=message_id)
    await picture(tg, ALICE, mark)
    children = [await settled(app, child.id) for child in await app.db.jobs.children(draft.id)]
    assert len(children) == 2
    for child in children:
        assert child.kind == "variation" and child.seed == 4 and child.request["chaos"] == 30
        assert (child.request["width"], child.request["height"]) == (256, 256) and not child.request["draft"]
        assert child.request["prompt"] == "a harbour at dawn"
