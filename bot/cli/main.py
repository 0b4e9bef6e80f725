"""`easel run | console | draw | doctor | worker | prune | backup | restore | health`."""

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
    _maintenance_parsers(commands)
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
    if args.command in ("prune", "backup", "restore"):
        return _maintain(args, settings)
    if args.command == "health":
        from bot.cli.probe import probe

        return probe(settings, args.ready)
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


def _maintenance_parsers(commands) -> None:
    prune = commands.add_parser("prune", help="remove old pictures (and audit rows) now; safe while the bot runs")
    prune.add_argument("--older-than", help="pictures of jobs older than this, e.g. 30d, 12h, 2w")
    prune.add_argument("--audit-older-than", help="admin audit rows older than this, e.g. 180d")
    prune.add_argument("--orphans", action="store_true", help="picture files no job names, older than an hour")
    prune.add_argument("--dry-run", action="store_true", help="only say what would go")
    backup = commands.add_parser("backup", help="a consistent copy of the database while the bot runs")
    backup.add_argument("dest", help="a new folder for the backup")
    backup.add_argument(
        "--with-images", nargs="?", const="copy", choices=["copy", "tar.zst"], help="the pictures too (default: copy)"
    )
    restore = commands.add_parser("restore", help="put a backup in place (the bot must be stopped)")
    restore.add_argument("src", help="a folder made by `easel backup`, or a database file")
    health = commands.add_parser("health", help="ask the running bot /healthz (for Docker's HEALTHCHECK)")
    health.add_argument("--ready", action="store_true", help="ask /readyz: model, database, Redis, disk")


def _maintain(args, settings: Settings) -> int:
    from pathlib import Path

    from bot.cli import maintenance

    try:
        if args.command == "prune":
            print(maintenance.run_prune(settings, args))
        elif args.command == "backup":
            print(maintenance.backup(settings, Path(args.dest), args.with_images))
        else:
            print(maintenance.restore(settings, Path(args.src)))
    except maintenance.MaintenanceError as error:
        print(f"easel {args.command}: {error}", file=sys.stderr)
        return 2
    return 0


def _configure_logging(level: str) -> None:
    from bot.runtime.logs import configure

    configure(level)


def _format_report(result: dict) -> str:
    lines = [f"device: {result['device']['summary']}"]
    lines.append(f"weights: {result['weights']}")
    lines += [f"  plan for {size}: {plan}" for size, plan in result["plans"].items()]
    if result["device"]["kind"] == "cuda":  # what each recipe would run as (EASEL_QUANTIZE forces one)
        for size, by_recipe in result["recipes"].items():
            lines += [f"    {size} as {recipe}: {plan}" for recipe, plan in by_recipe.items()]
    lines.append(f"model: {result['model']['name']} ({result['model']['status']})")
    lines.append(f"mode: {result['mode']}")
    lines += [f"problem: {problem}" for problem in result["problems"]]
    lines.append("ok" if result["ok"] else "not ready")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
