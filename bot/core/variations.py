"""Pictures made from pictures: what a button under a finished job (reroll, vary, upscale) or a reply
to one of its pictures with new words asks for."""

from __future__ import annotations

import re
from dataclasses import replace

from bot.language.buttons import Action
from bot.language.commands import Draw
from engine.outpaint import Grow, layout
from engine.request import DrawRequest, Kind, ModelProfile, fit_size, seed_for
from storage.images import ImageStore
from storage.jobs import Job, Jobs, JobStatus

ENHANCE_WORDS = {"enhance", "增强"}
PICK = re.compile(r"#([1-9])(?:\s+|$)")  # "#3 at night" in reply to a batch: its third picture
GROW = {
    Action.ZOOM_OUT_1_5: Grow.ZOOM_1_5,
    Action.ZOOM_OUT_2: Grow.ZOOM_2,
    Action.PAN_LEFT: Grow.LEFT,
    Action.PAN_RIGHT: Grow.RIGHT,
    Action.PAN_UP: Grow.UP,
    Action.PAN_DOWN: Grow.DOWN,
}


def request_for_action(
    action: Action, parent: Job, picture: int, profile: ModelProfile, images: ImageStore
) -> DrawRequest:
    """The new request a button press makes from a finished job (from one picture of a batch)."""
    base = DrawRequest.from_dict(parent.request)
    if action is Action.REROLL:  # the whole batch again
        return replace(base, seed=-1)
    source = str(images.resolve(parent.image_paths[picture]))
    if action in (Action.VARY_SUBTLE, Action.VARY_STRONG):
        strength = profile.subtle_strength if action is Action.VARY_SUBTLE else profile.strong_strength
        return replace(
            base, kind=Kind.VARIATION, source_image=source, strength=strength, seed=-1, count=1,
            **variation_size(parent, profile),
        )  # fmt: skip
    if action in GROW:
        return outpaint_request(base, source, GROW[action], profile)
    if action is Action.ENHANCE:
        return enhance_request(base, parent, picture, source, profile)
    width, height = upscaled_size(base.width, base.height, profile)
    seed = seed_for(parent.seed, picture) if parent.seed is not None else -1
    return replace(
        base, kind=Kind.UPSCALE, source_image=source, width=width, height=height, strength=None, seed=seed, count=1,
        draft=False,  # an upscaled draft is a full-size picture (and pays for one)
    )  # fmt: skip


def outpaint_request(base: DrawRequest, source: str, grow: Grow, profile: ModelProfile) -> DrawRequest:
    """Zoom out / Pan: the picture on a larger canvas (within what a picture may be), the rest drawn."""
    width, height, region = layout(base.width, base.height, grow, profile)
    return replace(
        base, kind=Kind.OUTPAINT, source_image=source, width=width, height=height, region=region,
        strength=None, seed=-1, count=1,
    )  # fmt: skip


def enhance_request(base: DrawRequest, parent: Job, picture: int, source: str, profile: ModelProfile) -> DrawRequest:
    """A draft's picture redrawn at full size: image to image from it, at its own seed (and chaos),
    in the profile's full steps, with the strength the profile holds for Enhance."""
    width, height = fit_size(base.width * 2, base.height * 2, profile)
    seed = seed_for(parent.seed, picture) if parent.seed is not None else -1
    return replace(
        base, kind=Kind.VARIATION, source_image=source, strength=profile.enhance_strength, seed=seed, count=1,
        width=width, height=height, steps=profile.default_steps, draft=False,
    )  # fmt: skip


def is_enhance(text: str) -> bool:
    """A reply that asks for Enhance ("enhance", "#2 enhance" once the pick is read, "增强")."""
    return text.strip().lower() in ENHANCE_WORDS


def reply_variation(draw: Draw, parent: Job, picture: int, profile: ModelProfile, images: ImageStore) -> Draw:
    """New words in reply to a picture: a strong variation of it, at the size a variation may have."""
    request = replace(
        draw.request,
        kind=Kind.VARIATION,
        source_image=str(images.resolve(parent.image_paths[picture])),
        strength=profile.strong_strength,
        **variation_size(parent, profile),
    )
    return Draw(request, parent_id=parent.id, style=draw.style)


def upscaled_size(width: int, height: int, profile: ModelProfile) -> tuple[int, int]:
    """2x (every official size doubles exactly); a larger source as large as an upscale may be."""
    factor = profile.upscale_factor
    return fit_size(width * factor, height * factor, profile, upscale=True)


def variation_size(parent: Job, profile: ModelProfile) -> dict[str, int]:
    """The parent's size, scaled into what a variation may have (an upscaled parent is bigger)."""
    stored = DrawRequest.from_dict(parent.request)
    width, height = fit_size(stored.width, stored.height, profile)
    return {"width": width, "height": height}


async def replied_picture(jobs: Jobs, platform: str, chat_id: str, message_id: str) -> tuple[Job, int] | None:
    """The picture of ours a message replies to, while it can still be varied: (job, picture)."""
    found = await jobs.find_picture(platform, chat_id, message_id)
    if found is None:
        return None
    parent, picture = found
    if parent.status is not JobStatus.DONE or parent.deleted or picture >= len(parent.image_paths):
        return None
    return found


async def picked_picture(
    jobs: Jobs, platform: str, chat_id: str, message_id: str, parent: Job, picture: int, text: str
) -> tuple[int, str]:
    """A batch shown as one message (Discord's gallery, Telegram's button message): "#3 words" names
    its picture.  Under one picture of the batch, "#3" is just words.  (picture, the words)."""
    pick = PICK.match(text)
    batch = len(parent.image_paths)
    if pick and batch > 1 and 1 <= int(pick[1]) <= batch:
        # A message that shows a single picture carries no other picture's buttons (Jobs.shows).
        other = (picture + 1) % batch
        if await jobs.shows(platform, chat_id, message_id, parent.id, other):
            return int(pick[1]) - 1, text[pick.end() :]
    return picture, text
