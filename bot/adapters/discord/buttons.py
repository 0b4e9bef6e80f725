"""The buttons under a picture: one `DynamicItem` template rebuilds any of them from its custom_id, so
they keep working after a restart and on messages from long ago."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import discord

from bot.language.buttons import TEMPLATE

PressHandler = Callable[[discord.Interaction, str], Awaitable[None]]


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):
    """A press hands the raw custom_id to the client's `on_easel_press`; the service judges it."""

    def __init__(self, custom_id: str, label: str | None = None, action: str = "", row: int | None = None) -> None:
        style = discord.ButtonStyle.danger if action == "delete" else discord.ButtonStyle.secondary
        super().__init__(discord.ui.Button(custom_id=custom_id, label=label, style=style), row=row)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> ResultButton:
        return cls(item.custom_id or match.string, item.label, match["action"])

    async def callback(self, interaction: discord.Interaction) -> None:
        on_press: PressHandler = interaction.client.on_easel_press  # type: ignore[attr-defined]
        await on_press(interaction, self.item.custom_id or "")


def result_view(rows: list[list[tuple[str, str]]]) -> discord.ui.View:
    """The service's rows of (custom_id, label) as a view, row for row (Discord allows five rows of five)."""
    view = discord.ui.View(timeout=None)
    for row, buttons in enumerate(rows[:5]):
        for custom_id, label in buttons[:5]:
            match = re.fullmatch(TEMPLATE, custom_id)
            view.add_item(ResultButton(custom_id, label, match["action"] if match else "", row=row))
    return view
