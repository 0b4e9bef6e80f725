"""`LoraRegistry`: the LoRA files an admin installed, checked before any job may name them.

A LoRA is `name.safetensors` in the LoRA folder (EASEL_LORA_DIR), with an optional `name.toml`
beside it (description, trigger words, default weight, sensitive).  Only safetensors is read, never
a pickled checkpoint.  A file is accepted when it is under the size cap and every key, once
diffusers has converted it to its own format, names a module of this transformer.  A bad file is
skipped with a log line; it never stops the bot.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
import threading
import tomllib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InvalidRequest, LoraUnusable

log = logging.getLogger(__name__)

MAX_LORAS = 3  # per job
MIN_WEIGHT = -2.0
MAX_WEIGHT = 2.0
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
_LORA_PART = re.compile(r"\.(lora_[AB]|lora_down|lora_up|lora\.down|lora\.up|alpha|dora_scale)(\.\w+)*$")


@dataclass(frozen=True)
class Lora:
    """One installed LoRA: its file and what its `name.toml` says about it."""

    name: str
    path: Path
    size_mb: float
    description: str = ""
    triggers: tuple[str, ...] = ()
    default_weight: float = 1.0
    sensitive: bool = False
    stamp: int = 0  # the file's mtime in ns: a file replaced under the same name is loaded afresh


@dataclass
class LoraRegistry:
    """The accepted LoRAs by name, and why each skipped file was skipped (for logs and `doctor`)."""

    directory: Path
    max_mb: float = float("inf")
    modules: frozenset[str] | None = None  # the transformer's module names, where keys are checked
    loras: dict[str, Lora] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    # file name -> (mtime, size, its name.toml's mtime): what the last scan saw
    _seen: dict[str, tuple[int, int, int]] = field(default_factory=dict, repr=False)

    def get(self, name: str) -> Lora | None:
        return self.loras.get(name.lower())

    def names(self) -> list[str]:
        return sorted(self.loras)

    def closest(self, name: str, n: int = 3) -> list[str]:
        """The installed names nearest to a mistyped one, best first."""
        return difflib.get_close_matches(name.lower(), self.names(), n=n, cutoff=0.4)

    def mark_bad(self, name: str, reason: str) -> None:
        """A file that passed the checks but failed when loaded: skipped, and neither listed nor
        offered, until the file (or its settings) changes; the next scan reads a changed file again."""
        lora = self.loras.pop(name.lower(), None)
        if lora is not None:
            self.skipped[lora.path.name] = reason
            log.warning("LoRA %s marked bad: %s", lora.path.name, reason)

    def rescan(self) -> None:
        """Read the folder again: new files join, removed ones go, changed ones are checked again;
        a file unchanged since the last scan is neither read nor logged again."""
        loras, skipped, seen = {}, {}, {}
        paths = sorted(self.directory.glob("*.safetensors")) if self.directory.is_dir() else []
        for path in paths:
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while we looked
            settings = path.with_suffix(".toml")
            seen[path.name] = (stat.st_mtime_ns, stat.st_size, settings.stat().st_mtime_ns if settings.is_file() else 0)
            old = self.loras.get(path.stem.lower())
            if self._seen.get(path.name) == seen[path.name] and (old is not None or path.name in self.skipped):
                if old is not None:
                    loras[old.name] = old
                else:
                    skipped[path.name] = self.skipped[path.name]
                continue
            try:
                lora = _read(path, self.max_mb, self.modules)
            except BadLora as bad:
                skipped[path.name] = str(bad)
                log.warning("LoRA %s skipped: %s", path.name, bad)
                continue
            loras[lora.name] = lora
        self.loras, self.skipped, self._seen = loras, skipped, seen


def scan(directory: str | Path, max_mb: float, transformer=None) -> LoraRegistry:
    """Read every `*.safetensors` in `directory`; with `transformer`, keep only the files whose keys
    name its modules.  A missing folder is an empty registry."""
    modules = frozenset(name for name, _ in transformer.named_modules()) if transformer is not None else None
    registry = LoraRegistry(Path(directory), max_mb, modules)
    registry.rescan()
    return registry


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime ns) -> sha256: each file read once
_HASHES_LOCK = threading.Lock()  # the bot hashes in worker threads, a worker on its GPU thread


def content_hash(path: str | Path) -> str:
    """The sha256 of a LoRA file, read once per (path, size, mtime): scale-out hands a LoRA job only to
    a worker whose file has the same hash as the bot's (docs/SCALE_OUT.md).  Raises OSError."""
    stat = Path(path).stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _HASHES_LOCK:
        known = _HASHES.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    with _HASHES_LOCK:
        for stale in [old for old in _HASHES if old[0] == key[0]]:  # older versions of this file
            del _HASHES[stale]
        _HASHES[key] = digest.hexdigest()
        return _HASHES[key]


class BadLora(Exception):
    """A LoRA file that cannot be used; the message says why."""


def _read(path: Path, max_mb: float, modules: frozenset[str] | None) -> Lora:
    name = path.stem.lower()
    if not NAME.match(name):
        raise BadLora("the name must be lower-case letters, digits, '_' or '-' (at most 48)")
    stat = path.stat()
    size_mb = stat.st_size / 1024**2
    if size_mb > max_mb:
        raise BadLora(f"{size_mb:.1f} MB is over EASEL_MAX_LORA_MB ({max_mb:g})")
    _check_header(path)
    if modules is not None:
        _check_keys(path, modules)
    settings = _settings(path.with_suffix(".toml"))
    return Lora(name=name, path=path, size_mb=round(size_mb, 2), stamp=stat.st_mtime_ns, **settings)


def _check_header(path: Path) -> None:
    """A readable safetensors file whose keys are LoRA keys: checked from its header alone, where no
    transformer is at hand (the bot process; the engine checks the keys against its transformer)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as exc:  # not safetensors at all, or cut short
        raise BadLora(f"not a readable safetensors file ({type(exc).__name__})") from exc
    if not any(_LORA_PART.search(key) for key in keys):
        raise BadLora("the file holds no LoRA weights")


def _check_keys(path: Path, modules: frozenset[str]) -> None:
    """Every key, converted as diffusers converts it when loading, must name a transformer module."""
    from diffusers import ZImagePipeline

    try:
        state_dict = ZImagePipeline.lora_state_dict(str(path))
    except Exception as exc:  # a truncated file, a foreign format: diffusers says which
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise BadLora(f"not a readable LoRA ({reason})") from exc
    if isinstance(state_dict, tuple):
        state_dict = state_dict[0]
    if not state_dict:
        raise BadLora("the file holds no LoRA weights")
    for key in state_dict:
        module = _LORA_PART.sub("", key.removeprefix("transformer."))
        if module == key.removeprefix("transformer.") or module not in modules:
            raise BadLora(f"key {key!r} does not match this model's transformer")


def _settings(toml_path: Path) -> dict:
    """What `name.toml` says; a broken one is logged and ignored (the LoRA still works)."""
    if not toml_path.is_file():
        return {}
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        weight = float(data.get("default_weight", data.get("weight", 1.0)))
        if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
            raise ValueError(f"default_weight {weight:g} is outside {MIN_WEIGHT:g}..{MAX_WEIGHT:g}")
        triggers = data.get("triggers", data.get("trigger_words", []))
        if isinstance(triggers, str):
            triggers = [triggers]
        return {
            "description": str(data.get("description", "")).strip(),
            "triggers": tuple(str(word) for word in triggers),
            "default_weight": weight,
            "sensitive": data.get("sensitive", False) is True,
        }
    except (OSError, ValueError, TypeError, tomllib.TOMLDecodeError) as exc:
        log.warning("LoRA settings %s ignored: %s", toml_path.name, exc)
        return {}


def resolve(loras: tuple, registry: LoraRegistry | None) -> tuple[tuple[str, float], ...]:
    """The request's LoRAs with every weight filled in (None takes the LoRA's default), or
    `InvalidRequest('error.lora_unknown')` naming the closest installed names.  A job with LoRAs
    reads the folder again first (a stat per unchanged file): a file an admin just added or replaced
    is used without a restart, and the engine loads a replaced one afresh."""
    if registry is not None and loras:
        registry.rescan()
    resolved = []
    for name, weight in loras:
        lora = registry.get(name) if registry is not None else None
        if lora is None:
            closest = registry.closest(name) if registry is not None else []
            raise InvalidRequest("error.lora_unknown", name=name, closest=", ".join(closest) or "-")
        resolved.append((lora.name, lora.default_weight if weight is None else float(weight)))
    return tuple(resolved)


def tags(loras: tuple) -> str:
    """A1111's way of writing LoRAs into the parameters: `<lora:name:0.8>`, space separated."""
    return " ".join(f"<lora:{name}:{weight:g}>" for name, weight in loras if weight is not None)


class LoraSwitch:
    """The adapters loaded into one pipeline: each file loaded once and kept (at most `max_loaded`
    of them and `max_memory_mb` of their weights, least recently used dropped first), switched per
    job with `set_adapters`, disabled for a job without LoRA so its picture is bit for bit the base
    model's.  The adapters one job needs are always kept together, whatever they weigh."""

    def __init__(self, pipeline, registry: LoraRegistry, max_loaded: int = 4, max_memory_mb: float = 1024.0) -> None:
        self.pipeline = pipeline
        self.registry = registry
        self.max_loaded = max(1, max_loaded, MAX_LORAS)
        self.max_bytes = max_memory_mb * 1024**2
        self.loaded: OrderedDict[str, Lora] = OrderedDict()
        self.sizes: dict[str, int] = {}  # bytes of each loaded adapter's weights, as loaded
        self._enabled = False

    def use(self, loras: tuple[tuple[str, float], ...]) -> None:
        """Make exactly these LoRAs (resolved weights) active; weight 0 counts as absent."""
        active = [(name, weight) for name, weight in loras if weight != 0]
        if not active:
            if self._enabled:
                self.pipeline.disable_lora()
                self._enabled = False
            return
        names = [name for name, _ in active]
        for name in names:
            self._load(name, keep=names)
        self.pipeline.enable_lora()
        self.pipeline.set_adapters(names, adapter_weights=[weight for _, weight in active])
        self._enabled = True

    def needs_loading(self, loras: tuple[tuple[str, float], ...]) -> bool:
        """Whether `use(loras)` would load a file (not just switch adapters already loaded)."""
        return any(weight != 0 and self.loaded.get(name) != self.registry.get(name) for name, weight in loras)

    def _load(self, name: str, keep: list[str]) -> None:
        lora = self.registry.get(name)
        if self.loaded.get(name) == lora:
            self.loaded.move_to_end(name)
            return
        if name in self.loaded:  # the file was replaced under the same name: load it afresh
            self._drop(name)
        # Before loading, its file's size stands in for what it will weigh (the same numbers); a file
        # removed since the scan weighs nothing here and fails to load below, refused clearly.
        try:
            expected = lora.path.stat().st_size
        except OSError:
            expected = 0
        while self._over(extra_count=1, extra_bytes=expected) and self._droppable(keep):
            self._drop(self._droppable(keep)[0])
        try:
            self.pipeline.load_lora_weights(str(lora.path), adapter_name=name)
        except Exception as exc:
            from engine.guards import is_out_of_memory  # torch: not at import (the bot process reads this module)

            if is_out_of_memory(exc):  # the file is fine; the memory ladder deals with this
                raise
            # Keys that name the right modules with the wrong shapes pass the folder's checks and
            # fail only here: a clear refusal (refunded), and the file is not offered again.
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            self.registry.mark_bad(name, f"failed to load: {reason}")
            if name in self.pipeline.get_list_adapters().get("transformer", []):
                self.pipeline.delete_adapters(name)  # diffusers already cleans up; an older one may not
            raise LoraUnusable(name=name) from exc
        self.loaded[name] = lora
        self.sizes[name] = self._weighs(name)
        while self._over() and self._droppable(keep):
            self._drop(self._droppable(keep)[0])
        log.info("LoRA %s loaded (%d kept, %.1f MB)", name, len(self.loaded), sum(self.sizes.values()) / 1024**2)

    def _over(self, extra_count: int = 0, extra_bytes: int = 0) -> bool:
        over_count = len(self.loaded) + extra_count > self.max_loaded
        return over_count or sum(self.sizes.values()) + extra_bytes > self.max_bytes

    def _droppable(self, keep: list[str]) -> list[str]:
        """Loaded adapters the job at hand does not need, least recently used first."""
        return [name for name in self.loaded if name not in keep]

    def _weighs(self, name: str) -> int:
        """Bytes of one adapter's weights in the transformer (its lora_A and lora_B matrices)."""
        markers = (f".lora_A.{name}.", f".lora_B.{name}.")  # not `.{name}.`: a LoRA may be called "0"
        return sum(
            parameter.numel() * parameter.element_size()
            for key, parameter in self.pipeline.transformer.named_parameters()
            if any(marker in key for marker in markers)
        )

    def _drop(self, name: str) -> None:
        self.pipeline.delete_adapters(name)
        del self.loaded[name]
        self.sizes.pop(name, None)
