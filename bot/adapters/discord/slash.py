"""The slash commands.  Each one's options are written back into the command language (`/draw a fox
--ar 3:2`) and handed to one runner, so Discord and Telegram go through the same parser and rules.

No `from __future__ import annotations` here: the option annotations carry the model profile's
bounds, computed when the commands are built, and discord.py reads them from the signatures.
"""

import logging
import re
from collections.abc import Awaitable, Callable

import discord
from discord import app_commands

from bot.language.commands import SETTINGS, STRENGTH_RANGE
from engine.request import MAX_CHAOS, MAX_SEED, ModelProfile

# Runs a command line for an interaction (DiscordAdapter.on_command), with /draw's picture if any.
Runner = Callable[..., Awaitable[None]]
# The installed LoRA names (ChatService.lora_names), asked on every autocomplete keystroke.
LoraNames = Callable[[], list[str]]
Completer = Callable[[discord.Interaction, str], Awaitable[list[app_commands.Choice[str]]]]

log = logging.getLogger(__name__)

MAX_CHOICES = 25  # Discord's limit per option
_MENTION = re.compile(r"<@!?([0-9]+)>")


def draw_text(
    prompt: str,
    *,
    aspect_ratio: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    cfg: float | None = None,
    negative: str | None = None,
    raw: bool = False,
    count: int | None = None,
    style: str | None = None,
    chaos: int | None = None,
    draft: bool = False,
    strength: float | None = None,
    lora: str | None = None,
) -> str:
    """`/draw <prompt> --ar .. --n .. --style .. --seed .. --steps .. --cfg .. --raw --no ..`; `--no`
    last, as it takes every word after it.  Flags typed inside the prompt still count (the parser
    reads them all)."""
    parts = ["/draw", prompt]
    if aspect_ratio:
        parts += ["--ar", aspect_ratio]
    if count is not None:
        parts += ["--n", str(count)]
    if style:
        parts += ["--style", style]
    if seed is not None:
        parts += ["--seed", str(seed)]
    if steps is not None:
        parts += ["--steps", str(steps)]
    if cfg is not None:
        parts += ["--cfg", repr(float(cfg))]  # every digit: `:g` would turn 1.640625 into 1.64062
    if chaos is not None:
        parts += ["--chaos", str(chaos)]
    if strength is not None:
        parts += ["--strength", repr(float(strength))]
    for item in (lora or "").replace(",", " ").split():  # `ink`, `ink:0.8`, or several
        parts += ["--lora", item]
    if draft:
        parts.append("--draft")
    if raw:
        parts.append("--raw")
    if negative:
        parts += ["--no", negative]
    return " ".join(parts)


def line(*parts: object) -> str:
    """A command line from the parts given, leaving out the missing ones."""
    return " ".join(str(part) for part in parts if part is not None and str(part) != "")


def target(user: str) -> str:
    """A user as the admin commands take them: a Discord mention becomes `discord:<id>`."""
    match = _MENTION.fullmatch(user.strip())
    return f"discord:{match[1]}" if match else user.strip()


def lora_choices(names: list[str], current: str) -> list[app_commands.Choice[str]]:
    """The names matching what was typed so far (prefix matches first), keeping a typed `:weight`."""
    typed, colon, weight = current.strip().partition(":")
    typed = typed.lower()
    matches = sorted((name for name in names if typed in name.lower()), key=lambda n: not n.lower().startswith(typed))
    return [
        app_commands.Choice(name=value, value=value)
        for value in (f"{name}{colon}{weight}" for name in matches[:MAX_CHOICES])
        if len(value) <= 100  # Discord's limit for a choice
    ]


def lora_completer(lora_names: LoraNames | None) -> Completer:
    """Autocomplete for /draw's `lora`: answers from memory at once, and an empty list on any error
    (an exception would leave Discord showing "Loading options failed")."""

    async def complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        try:
            return lora_choices(lora_names() if lora_names is not None else [], current or "")
        except Exception:
            log.exception("LoRA autocomplete failed")
            return []

    return complete


def build_commands(
    profile: ModelProfile, run: Runner, styles: list[str] | None = None, lora_names: LoraNames | None = None
) -> list[app_commands.Command]:
    """Every command, with option bounds and choices from the model profile, the style presets and,
    as the user types, the installed LoRAs."""
    ratios = [app_commands.Choice(name=ratio, value=ratio) for ratio in list(profile.aspect_ratios)[:MAX_CHOICES]]
    style_choices = [app_commands.Choice(name=name, value=name) for name in (styles or [])[:MAX_CHOICES]]
    actions = [app_commands.Choice(name=action, value=action) for action in ("add", "remove", "list")]
    setting_keys = [app_commands.Choice(name=key, value=key) for key in SETTINGS]
    values = dict.fromkeys(value for choices in SETTINGS.values() for value in choices)
    setting_values = [app_commands.Choice(name=value, value=value) for value in values]

    @app_commands.command()
    @app_commands.describe(
        prompt="What to draw (flags like --ar 3:2 work here too)",
        aspect_ratio="Shape of the picture",
        seed="Same seed + same words = same picture",
        steps="More steps: more detail, slower",
        cfg="Follow the words more strictly (slower)",
        negative="Things to leave out (acts when cfg is above 1)",
        raw="Use your words exactly, without touch-ups",
        count="How many pictures (each costs work units from your quota)",
        style="A style preset (see /styles)",
        chaos="0-100: more variety between seeds (0 = none)",
        draft="A quick half-size draft: four of them cost one unit; Enhance the one you like",
        image="Start from your own picture",
        strength="With a picture: how far to move away from it (0.1-0.95)",
        lora="A LoRA by name, or name:0.8 for its weight (see /loras)",
    )
    @app_commands.choices(aspect_ratio=ratios, **({"style": style_choices} if style_choices else {}))
    @app_commands.autocomplete(lora=lora_completer(lora_names))
    async def draw(
        interaction: discord.Interaction,
        prompt: str,
        aspect_ratio: str = None,
        count: app_commands.Range[int, 1, profile.max_count] = None,
        style: str = None,
        seed: app_commands.Range[int, 0, MAX_SEED] = None,
        steps: app_commands.Range[int, profile.min_steps, profile.max_steps] = None,
        cfg: app_commands.Range[float, profile.min_cfg, profile.max_cfg] = None,
        negative: str = None,
        raw: bool = False,
        chaos: app_commands.Range[int, 0, MAX_CHAOS] = None,
        draft: bool = False,
        image: discord.Attachment = None,
        strength: app_commands.Range[float, STRENGTH_RANGE[0], STRENGTH_RANGE[1]] = None,
        lora: str = None,
    ) -> None:
        """Draw a picture from your words."""
        text = draw_text(
            prompt,
            aspect_ratio=aspect_ratio,
            seed=seed,
            steps=steps,
            cfg=cfg,
            negative=negative,
            raw=raw,
            count=count,
            style=style,
            chaos=chaos,
            draft=draft,
            strength=strength,
            lora=lora,
        )
        await run(interaction, text, image)

    @app_commands.command()
    async def styles(interaction: discord.Interaction) -> None:
        """The style presets."""
        await run(interaction, "/styles")

    @app_commands.command()
    async def loras(interaction: discord.Interaction) -> None:
        """The installed LoRAs."""
        await run(interaction, "/loras")

    def word_list(name: str, description: str) -> app_commands.Command:
        @app_commands.command(name=name, description=description)
        @app_commands.describe(
            action="add, remove or list", term="The word or phrase (re:pattern for a regular expression)"
        )
        @app_commands.choices(action=actions)
        async def edit(interaction: discord.Interaction, action: str, term: str = None) -> None:
            await run(interaction, line(f"/{name}", action, term))

        return edit

    block = word_list("block", "Admins: this server's blocked words.")
    sensitive = word_list("sensitive", "Admins: words whose pictures go behind a spoiler.")

    @app_commands.command()
    @app_commands.describe(job="The job number (default: your latest waiting one)")
    async def cancel(interaction: discord.Interaction, job: app_commands.Range[int, 1] = None) -> None:
        """Cancel a picture that is still waiting."""
        await run(interaction, line("/cancel", job))

    @app_commands.command()
    @app_commands.describe(page="Page number")
    async def history(interaction: discord.Interaction, page: app_commands.Range[int, 1] = None) -> None:
        """Your pictures."""
        await run(interaction, line("/history", page))

    @app_commands.command()
    @app_commands.describe(job="The job number")
    async def show(interaction: discord.Interaction, job: app_commands.Range[int, 1]) -> None:
        """The details of one picture."""
        await run(interaction, line("/show", job))

    @app_commands.command()
    async def quota(interaction: discord.Interaction) -> None:
        """Work units left today (a standard picture is 1)."""
        await run(interaction, "/quota")

    @app_commands.command()
    @app_commands.describe(key="The setting to change", value="Its new value")
    @app_commands.choices(key=setting_keys, value=setting_values)
    async def settings(interaction: discord.Interaction, key: str = None, value: str = None) -> None:
        """Your language and PNG files."""
        await run(interaction, line("/settings", key, value))

    @app_commands.command(name="help")
    async def help_(interaction: discord.Interaction) -> None:
        """How to use the bot."""
        await run(interaction, "/help")

    @app_commands.command()
    @app_commands.describe(user="@someone, a Discord id, or telegram:12345", reason="Why (kept in the audit log)")
    async def ban(interaction: discord.Interaction, user: str, reason: str = None) -> None:
        """Admins: stop someone drawing."""
        await run(interaction, line("/ban", target(user), reason))

    @app_commands.command()
    @app_commands.describe(user="@someone, a Discord id, or telegram:12345")
    async def unban(interaction: discord.Interaction, user: str) -> None:
        """Admins: let someone draw again."""
        await run(interaction, line("/unban", target(user)))

    @app_commands.command()
    @app_commands.describe(user="@someone, a Discord id, or telegram:12345", limit="A number, unlimited or default")
    async def setquota(interaction: discord.Interaction, user: str, limit: str) -> None:
        """Admins: work units a day for someone (0 = unlimited)."""
        await run(interaction, line("/setquota", target(user), limit))

    @app_commands.command()
    @app_commands.describe(user="@someone, a Discord id, or telegram:12345", role="The quota tier")
    async def setrole(interaction: discord.Interaction, user: str, role: str) -> None:
        """Admins: move someone to a quota tier."""
        await run(interaction, line("/setrole", target(user), role))

    @app_commands.command()
    async def queue(interaction: discord.Interaction) -> None:
        """Admins: everything waiting."""
        await run(interaction, "/queue")

    @app_commands.command()
    async def stats(interaction: discord.Interaction) -> None:
        """Admins: totals and workers."""
        await run(interaction, "/stats")

    @app_commands.command(name="lora")
    @app_commands.describe(action="reload: read the folder now")
    @app_commands.choices(action=[app_commands.Choice(name="reload", value="reload")])
    async def lora_admin(interaction: discord.Interaction, action: str) -> None:
        """Admins: read the LoRA folder again."""
        await run(interaction, line("/lora", action))

    return [
        draw,
        styles,
        loras,
        cancel,
        history,
        show,
        quota,
        settings,
        help_,
        ban,
        unban,
        setquota,
        setrole,
        queue,
        stats,
        lora_admin,
        block,
        sensitive,
    ]
