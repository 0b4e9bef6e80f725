"""`easel draw`: one picture from the command line, through the same parser and engine as the bot."""

from __future__ import annotations

import argparse
from pathlib import Path

from bot.language.errors import UserError
from bot.language.messages import t
from bot.runtime.settings import Settings
from engine.errors import EngineError
from engine.metadata import parameters_text, save_png
from engine.request import profile_for


def draw_once(args: argparse.Namespace, settings: Settings) -> int:
    from bot.language.commands import parse_draw_args
    from engine.engine import Engine

    model = args.model or settings.model
    profile = profile_for(model)
    flags = []
    for name in ("ar", "size", "seed", "steps", "cfg"):
        value = getattr(args, name)
        if value is not None:
            flags.append(f"--{name} {value}")
    if args.negative:
        flags.append(f"--no {args.negative}")
    if args.raw:
        flags.append("--raw")
    lang = settings.default_language
    try:
        request = parse_draw_args(" ".join([args.prompt, *flags]), profile)
        engine = Engine.load(model, device=settings.device, weights=settings.weights())
        result = engine.generate(request, on_step=lambda step, total: print(f"step {step}/{total}", end="\r"))
    except (UserError, EngineError) as error:
        print(t(error.key, lang, **error.params))
        return 1
    path = save_png(result.image, write_path(args.out), parameters_text(result.request, result.seed, model))
    print(f"{path}  seed {result.seed}  {result.request.width}x{result.request.height}  {result.timings['total']:.1f}s")
    return 0


def write_path(path: str) -> Path:
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    return target
