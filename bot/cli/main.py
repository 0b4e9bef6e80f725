"""`easel run | console | draw | doctor | worker`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bot.runtime.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="easel", description="A self-hosted drawing bot for Discord and Telegram.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the bot with the chat tokens configured (the console when none)")
    commands.add_parser("console", help="chat with the bot in this terminal")
    draw = commands.add_parser("draw", help="draw one picture and write it to a file")
    draw.add_argument("prompt")
    draw.add_argument("--ar", help="aspect ratio, e.g. 3:2")
    draw.add_argument("--size", help="exact size, e.g. 1024x768")
    draw.add_argument("--seed", type=int)
    draw.add_argument("--steps", type=int)
    draw.add_argument("--cfg", type=float)
    draw.add_argument("--no", dest="negative", help="negative prompt (acts only when cfg > 1)")
    draw.add_argument("--raw", action="store_true", help="no quality enhancement")
    draw.add_argument("--out", default="easel.png", help="where to write the PNG")
    draw.add_argument("--model", help="hub id or local directory (default: EASEL_MODEL)")
    doctor = commands.add_parser("doctor", help="check the device, the model and the configuration")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    commands.add_parser("worker", help="a GPU worker for a Redis-backed bot (EASEL_REDIS_URL)")
    args = parser.parse_args(argv)

    settings = Settings()
    _configure_logging(settings.log_level)
    if args.command == "draw":
        from bot.cli.draw import draw_once

        return draw_once(args, settings)
    if args.command == "doctor":
        from bot.cli.doctor import report

        result = report(settings)
        print(json.dumps(result, indent=2) if args.json else _format_report(result))
        return 0 if result["ok"] else 1
    if args.command == "worker":
        from bot.scale.remote import main as serve_worker

        return serve_worker(settings)
    return asyncio.run(_serve(settings, console=args.command == "console"))


async def _serve(settings: Settings, console: bool) -> int:
    from bot.community.moderation import WordListUnreadable
    from bot.runtime.app import build_app, run_forever

    try:
        app = await build_app(settings)
    except WordListUnreadable as error:
        print(f"easel: not starting: {error}", file=sys.stderr)
        return 2
    adapters = []
    if not console and settings.telegram_token:
        from bot.adapters.telegram import TelegramAdapter

        adapters.append(TelegramAdapter(app.service, settings))
    if not console and settings.discord_token:
        from bot.adapters.discord import DiscordAdapter

        adapters.append(DiscordAdapter(app.service, settings))
    if not adapters:
        from bot.adapters.console import ConsoleAdapter

        adapters.append(ConsoleAdapter(app.service))
    await run_forever(app, adapters)
    return 0


def _configure_logging(level: str) -> None:
    from bot.runtime.logs import configure

    configure(level)


def _format_report(result: dict) -> str:
    lines = [f"device: {result['device']['summary']}"]
    lines += [f"  plan for {size}: {plan}" for size, plan in result["plans"].items()]
    lines.append(f"model: {result['model']['name']} ({result['model']['status']})")
    lines.append(f"mode: {result['mode']}")
    lines += [f"problem: {problem}" for problem in result["problems"]]
    lines.append("ok" if result["ok"] else "not ready")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
