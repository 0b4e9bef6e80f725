"""`easel doctor`: what this machine can do with the configured model, in plain words."""

from __future__ import annotations

import os
from pathlib import Path

from bot.runtime.settings import Settings
from engine.planner import (
    choose_recipe,
    largest_fitting_square,
    plan_for,
    quantized,
    quantizing_shortfall,
    ram_shortfall,
)
from engine.quantize import Recipe, is_quantized_already, with_transformer_file
from engine.request import profile_for
from storage.disk import DiskGuard

SIZES = (512, 768, 1024, 1536)


def report(settings: Settings) -> dict:
    from engine.device import probe_device  # imports torch: only when asked

    profile = with_transformer_file(profile_for(settings.model), settings.weights().transformer_file)
    facts = probe_device(settings.device)
    problems: list[str] = []
    if facts.is_gpu:
        summary = (
            f"{facts.name}, {facts.total_vram_gb:.1f} GB VRAM ({facts.free_vram_gb:.1f} GB free), "
            f"compute {facts.compute_capability}, bf16 {'yes' if facts.real_bf16 else 'no (fp16 with clamping)'}"
        )
    else:
        summary = f"CPU only, {facts.system_ram_gb:.0f} GB RAM"
        if profile.model_gb > 4:
            problems.append(
                f"{profile.name} needs an NVIDIA GPU (6 GB or more): on this CPU-only machine it would need "
                f"~{profile.model_gb * 2:.0f} GB of RAM and minutes per picture."
            )
    recipe = choose_recipe(facts, profile, settings.quantize)
    gguf = True if settings.transformer_file else None  # None: as the recipe has it (int4's is GGUF)
    plans, recipes = _plans(facts, profile, recipe, gguf)
    problems += _memory_problems(settings, facts, profile, recipe, recipe is Recipe.INT4 or bool(gguf))
    model = _model_status(settings.model)
    if model["status"] == "missing":
        problems.append(model["hint"])
    if settings.transformer_file and not settings.transformer_file.expanduser().is_file():
        problems.append(f"EASEL_TRANSFORMER_FILE {settings.transformer_file} does not exist")
    problems += _configuration_problems(settings)
    problems += _community_problems(settings, profile)
    mode = (
        ", ".join(
            name for name, on in (("telegram", settings.telegram_token), ("discord", settings.discord_token)) if on
        )
        or "console (no chat token configured)"
    )
    redis = _redis_status(settings.redis_url) if settings.redis_url else None
    if redis is not None:
        mode += f"; scale-out via Redis {redis['url']}: {_describe_workers(redis)}"
        if not redis["ok"]:
            problems.append(f"Redis at {redis['url']} is unreachable ({redis['error']}): jobs will wait in the queue")
        elif redis["too_old"]:
            problems.append(f"{redis['too_old']}: `easel worker` refuses to start against it")
        elif not redis["workers"]:
            problems.append("no live worker: start `easel worker` (EASEL_REDIS_URL set) on a GPU machine")
    return {
        "ok": not problems,
        "device": {"summary": summary, **facts.__dict__},
        "weights": _describe_weights(settings, recipe),
        "plans": plans,
        "recipes": recipes,
        "model": model,
        "mode": mode,
        "redis": redis,
        "problems": problems,
    }


def _memory_problems(settings: Settings, facts, profile, recipe: Recipe, gguf: bool) -> list[str]:
    """Not enough VRAM for anything; not enough RAM + swap to quantize once, or for the plan."""
    problems = []
    if facts.is_gpu and largest_fitting_square(facts, quantized(profile, recipe), gguf=gguf) is None:
        problems.append("not enough free GPU memory for even the smallest picture")
    if not is_quantized_already(settings.model, recipe, settings.quantized_path, bool(settings.transformer_file)):
        problems += [why for why in [quantizing_shortfall(facts, profile, recipe)] if why]
    return problems + [why for why in [ram_shortfall(facts, profile, recipe)] if why]


def _plans(facts, profile, recipe: Recipe, gguf: bool | None = None) -> tuple[dict, dict]:
    """Per size: the plan in the recipe the engine will load, and the plan in each recipe."""
    plans, recipes = {}, {}
    for side in SIZES:
        if side > profile.max_side:
            continue
        plans[f"{side}x{side}"] = _fitting(plan_for(facts, profile, side, side, recipe=recipe, gguf=gguf))
        recipes[f"{side}x{side}"] = {
            other.value: _fitting(plan_for(facts, profile, side, side, recipe=other, gguf=gguf)) for other in Recipe
        }
    return plans, recipes


def _fitting(plan) -> str:
    return plan.describe() + ("" if plan.fits else " - may not fit")


def _describe_weights(settings: Settings, recipe: Recipe) -> str:
    """The recipe the engine will load, and why: forced by EASEL_QUANTIZE, or the planner's pick."""
    how = "EASEL_QUANTIZE" if settings.quantize != "auto" else "auto"
    text = {Recipe.NONE: "the model's own", Recipe.INT8: "int8", Recipe.INT4: "int4"}[recipe] + f" ({how})"
    if recipe is not Recipe.NONE:
        text += f", quantized once into {settings.quantized_path}"
    if settings.transformer_file:
        text += f"; transformer from {settings.transformer_file}"
    return text


def _model_status(model: str) -> dict:
    if Path(model).is_dir():
        found = (Path(model) / "model_index.json").exists()
        return {
            "name": model,
            "status": "local" if found else "missing",
            "hint": "" if found else f"{model} has no model_index.json: point EASEL_MODEL at a diffusers model folder",
        }
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = isinstance(try_to_load_from_cache(model, "model_index.json"), str)
    except Exception:
        cached = False
    return {
        "name": model,
        "status": "cached" if cached else "will download (~33 GB) on first start",
        "hint": "",
    }


def _configuration_problems(settings: Settings) -> list[str]:
    problems = []
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(data_dir, os.W_OK):
            problems.append(f"data dir {data_dir} is not writable")
    except OSError as exc:
        problems.append(f"data dir {data_dir} cannot be created: {exc.strerror}")
    disk = DiskGuard(data_dir, settings.min_free_gb)
    if disk.low():
        problems.append(
            f"disk low: {disk.free_gb():.1f} GB free under {data_dir},"
            f" under EASEL_MIN_FREE_GB={settings.min_free_gb:g}: new jobs are refused"
            " (free space, or `easel prune --older-than 30d`)"
        )
    for admin in settings.admins:
        platform, _, user_id = admin.partition(":")
        if platform not in ("telegram", "discord") or not user_id:
            problems.append(f"EASEL_ADMINS entry {admin!r} should look like telegram:123 or discord:456")
    return problems


def _community_problems(settings: Settings, profile) -> list[str]:
    """Word-list files that cannot be read, style presets and LoRA files that will be skipped."""
    from bot.community.moderation import WordListUnreadable, configured_files, read_terms
    from bot.community.styles import StyleBook
    from engine.loras import scan

    problems = []
    for variable, path in configured_files(settings):
        try:
            read_terms(variable, path)
        except WordListUnreadable as error:
            problems.append(f"THE BOT WILL NOT START: {error}")
    book = StyleBook(settings.styles_path, profile)
    book.all()
    problems += [f"style preset skipped: {problem}" for problem in book.problems]
    # The header check only; the engine also matches each file's keys to its transformer when it loads.
    loras = scan(settings.loras_path, settings.max_lora_mb)
    problems += [f"LoRA skipped: {name}: {why}" for name, why in loras.skipped.items()]
    return problems


def _redis_status(url: str) -> dict:
    """Can we reach the scale-out Redis, and which workers are announced there right now?"""
    import redis

    from bot.runtime.logs import safe_url
    from bot.scale.protocol import WORKER_PREFIX, RedisTooOld, WorkerInfo, too_old

    status = {"url": safe_url(url), "ok": False, "error": None, "version": None, "too_old": None, "workers": []}
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        status["version"] = version = str(client.info("server").get("redis_version", "?"))
        if too_old(version):
            status["too_old"] = str(RedisTooOld(version))
        keys = list(client.scan_iter(match=WORKER_PREFIX + "*", count=100))
        infos = [WorkerInfo.from_json(value) for value in (client.mget(keys) if keys else []) if value]
        status.update(ok=True, workers=[info.__dict__ for info in sorted(infos, key=lambda info: info.id)])
    except redis.RedisError as exc:
        status["error"] = str(exc) or type(exc).__name__
    finally:
        client.close()
    return status


def _describe_workers(status: dict) -> str:
    if not status["ok"]:
        return "unreachable"
    workers = status["workers"]
    names = ", ".join(
        f"{w['id']} on {w['host']} ({w['device']}, {w.get('recipe') or '?'} weights, {len(w.get('loras') or {})} LoRAs)"
        for w in workers
    )
    return f"{len(workers)} live worker{'' if len(workers) == 1 else 's'}" + (f": {names}" if names else "")
