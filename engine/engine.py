"""`Engine`: load Z-Image once, then `generate(request) -> Result`, planned and guarded.

`generate` reads like a diffusers `__call__`: check inputs, plan memory, encode, denoise, decode,
post-process.  Out-of-memory walks down the plan ladder with the same seed (and on a GPU, that size
starts on the rung that worked for the next half hour: engine/learned.py); non-finite or black
output is retried once in a safer precision.  A batch (`count` pictures, consecutive seeds) is one
pipeline call when the plan has room for it, else one call per picture; a batch that runs out of
memory in one call is first drawn one picture per call on the same rung.  Nothing here knows about
chats, queues or storage.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import random
import time
from collections.abc import Callable

import torch
from PIL import Image

from engine.chaos import CleanLater, per_picture
from engine.device import probe_device, resolve_device
from engine.embeddings import EmbeddingCache
from engine.enhance import enhance_prompts, post_process
from engine.errors import Cancelled, InvalidRequest, ModelNotFound, NeedsGPU
from engine.fallback import Failure, Fallback
from engine.guards import NonFiniteOutput, Progress, StepWatch, check_decoded, is_out_of_memory
from engine.learned import LearnedRungs
from engine.loras import LoraRegistry, LoraSwitch, resolve, scan
from engine.outpaint import canvas_and_mask, keep_original
from engine.placement import DTYPES, HALF_PLACED, apply_placement
from engine.planner import (
    DeviceFacts,
    Placement,
    Plan,
    choose_dtype,
    choose_recipe,
    ladder,
    quantized,
    quantizing_shortfall,
    ram_shortfall,
)
from engine.quantize import (
    Recipe,
    WeightsWanted,
    is_gguf,
    is_quantized_already,
    load_components,
    model_folder,
    with_transformer_file,
)
from engine.request import MAX_SEED, RANDOM_SEED, DrawRequest, Kind, ModelProfile, profile_for, seed_for, validate
from engine.result import Result

log = logging.getLogger(__name__)

OFFLOADS = (Placement.MODEL_OFFLOAD, Placement.GROUP_OFFLOAD, Placement.SEQUENTIAL_OFFLOAD)

OnStep = Callable[[int, int], None]
ShouldStop = Callable[[], bool]


def turbo_sigmas(steps: int) -> list[float]:
    """N sigmas give N transformer forwards on every diffusers version (0.36-0.38 need N+1 steps)."""
    return torch.linspace(1.0, 1.0 / steps, steps).tolist()


class Engine:
    """One loaded model on one device.  Not thread-safe: one generation at a time."""

    def __init__(
        self, pipeline, model: str, profile: ModelProfile, device: str, probe=probe_device, recipe: Recipe = Recipe.NONE
    ) -> None:
        from diffusers import ZImageImg2ImgPipeline, ZImageInpaintPipeline

        self._pipeline = pipeline
        # Built on the text-to-image pipeline's own components: every weight shared, no second copy.
        # (from_pipe would also cast them all, which quantized weights refuse.)
        self._img2img = ZImageImg2ImgPipeline(**pipeline.components)
        self._inpaint = ZImageInpaintPipeline(**pipeline.components)
        for pipe in (self._pipeline, self._img2img, self._inpaint):
            pipe.set_progress_bar_config(disable=True)
        self.model = model
        self.profile = profile
        self.device = device
        self.recipe = recipe  # the weights' precision (engine/quantize.py); every plan records it
        self.gguf = is_gguf(pipeline.transformer)  # int4's transformer, or EASEL_TRANSFORMER_FILE's
        self._probe = probe
        self._applied: Plan | None = None
        self._learned = LearnedRungs()
        self._embeddings = EmbeddingCache()
        # False draws every batch one picture per call, whatever the plan (bench/batch.py compares).
        self.one_call_batches = True
        self._loras: LoraSwitch | None = None

    def install_loras(
        self, directory: str, max_mb: float, max_loaded: int = 4, max_memory_mb: float = 1024.0
    ) -> LoraRegistry:
        """Read the LoRA folder (engine/loras.py), keeping the files made for this transformer; call
        again to pick up changes.  Adapters already loaded stay loaded while their file is unchanged."""
        registry = scan(directory, max_mb, self._pipeline.transformer)
        if self._loras is None:
            self._loras = LoraSwitch(self._pipeline, registry, max_loaded, max_memory_mb)
        self._loras.registry = registry
        return registry

    @property
    def loras(self) -> LoraRegistry | None:
        """The installed LoRAs, or None before `install_loras`."""
        return self._loras.registry if self._loras else None

    @classmethod
    def load(
        cls, model: str, device: str = "auto", allow_cpu: bool | None = None, weights: WeightsWanted | None = None
    ) -> Engine:
        """Load a hub id or a local directory through `from_pretrained` (no network for local files),
        in the weights `weights` asks for: `auto` picks a recipe for this card (engine/planner.py)."""
        from diffusers import ZImagePipeline
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
        weights = weights or WeightsWanted()
        profile = with_transformer_file(profile_for(model), weights.transformer_file)
        device = resolve_device(device)
        facts = probe_device(device)
        if (refusal := why_it_cannot_run(model, facts, allow_cpu, profile)) is not None:
            raise refusal
        recipe = choose_recipe(facts, profile, weights.quantize)
        first_start = weights.changes(recipe) and not is_quantized_already(
            model, recipe, weights.cache_dir, bool(weights.transformer_file)
        )
        quantizing = quantizing_shortfall(facts, profile, recipe) if first_start else None
        for shortfall in (ram_shortfall(facts, profile, recipe), quantizing):
            if shortfall:
                log.warning(shortfall)
        dtype, _ = choose_dtype(facts)
        try:
            changed = weights.changes(recipe)
            components = load_components(model_folder(model), recipe, weights, DTYPES[dtype]) if changed else {}
            pipeline = ZImagePipeline.from_pretrained(model, dtype=DTYPES[dtype], **components)
        except (OSError, ValueError) as exc:
            raise ModelNotFound(model=model, reason=str(exc).splitlines()[0][:200]) from exc
        log.info(
            "weights: %s%s",
            recipe.value,
            f", transformer from {weights.transformer_file}" * bool(weights.transformer_file),
        )
        return cls(pipeline, model, profile, device, recipe=recipe)

    @property
    def pipeline(self):
        """The loaded diffusers ZImagePipeline, for inspection."""
        return self._pipeline

    def device_facts(self) -> DeviceFacts:
        """Free memory as the planner must see it: what this engine holds counts as free, since any
        re-placement releases it (else the plan would flip between placements job after job)."""
        facts = self._probe(self.device)
        if facts.is_gpu and self.device.startswith("cuda"):
            held = torch.cuda.memory_reserved(self.device) / 1024**3
            facts = dataclasses.replace(facts, free_vram_gb=min(facts.total_vram_gb, facts.free_vram_gb + held))
        return facts

    def generate(
        self, request: DrawRequest, on_step: OnStep | None = None, should_stop: ShouldStop | None = None
    ) -> Result:
        """Draw `request.count` pictures with consecutive seeds on the fastest plan that fits."""
        started = time.perf_counter()
        # 1. Check inputs
        request = validate(request, self.profile)
        request = dataclasses.replace(request, loras=resolve(request.loras, self.loras))
        seed = random.randint(0, MAX_SEED) if request.seed == RANDOM_SEED else request.seed
        if should_stop and should_stop():
            raise Cancelled()

        # 2. Plan memory: the fastest plan that fits, then safer rungs on OOM; a batch runs as one
        #    pipeline call when that rung also has room for it, else one call per picture.  On CPU
        #    the plan always has room (RAM is not planned), and one call is faster there too:
        #    bench/batch.py measured four tiny-model pictures 1.57x faster than one call each.
        #    A size that ran out of memory here lately starts where it last worked (engine/learned.py);
        #    only GPU memory is planned, so only a GPU has anything to learn.
        facts = self.device_facts()
        lesson = (request.width, request.height, request.cfg > 1.0, request.count) if facts.is_gpu else None
        held = self._learned.holding(lesson, facts.free_vram_gb) if lesson else None
        ladders = functools.partial(self._ladders, facts, request)
        sized = quantized(self.profile, self.recipe)  # RAM and the largest size for the loaded weights
        fallback = Fallback(ladders, facts, sized, request, held, self.one_call_batches, self.gguf)
        batch = _Batch(request, [seed_for(seed, i) for i in range(request.count)], Progress(on_step), should_stop)

        # 3. Run, stepping down on OOM and retrying once on non-finite output (engine/fallback.py)
        while (failure := self._attempt(fallback, batch)) is not None:
            if not fallback.after(failure, drawn=len(batch.images)):
                break  # out of options with some pictures drawn: keep them (a warning says so)

        # 8. Learn from a fallback, then report
        batch.timings["total"] = time.perf_counter() - started
        peak = self._read_peak_memory()
        self._release_cached_memory()
        if lesson and fallback.worth_learning:
            # Free memory as it is now, not as it was at the start: a program that grabbed memory
            # mid-job (and caused the OOM) still holds it, and the lesson lapses once it lets go.
            self._learned.learn(lesson, fallback.rung, fallback.one_call_failed, self.device_facts().free_vram_gb)
        return _result(batch, seed, fallback, peak)

    def _attempt(self, fallback: Fallback, batch: _Batch) -> Failure | None:
        """One run on the fallback's next plan; on non-finite output or out of memory, what failed.
        The failure is noted in its `except` block and handled after it: the exception's traceback
        holds the failed call's frames (latents, activations), which must be gone before memory is
        released."""
        self._reset_peak_memory()  # the peak of the run that succeeds, not of a failed attempt
        plan = fallback.next_plan()
        stage = None
        try:
            self._run(plan, batch, fallback.batched)
            return None
        except NonFiniteOutput as bad:
            stage = bad.stage
        except Exception as exc:
            if not is_out_of_memory(exc):
                self._free_memory()
                raise
            log.warning("OOM with plan %s: %s", plan.describe(), str(exc).splitlines()[0][:200])
        in_batch, batch.batched_call = batch.batched_call, False
        self._free_memory()
        return Failure(stage, in_batch)

    def _ladders(self, facts: DeviceFacts, request: DrawRequest, dtype: str | None = None) -> tuple[list, list]:
        """The OOM ladder for one picture per call, and the same rungs for the whole batch in one."""
        size = (facts, self.profile, request.width, request.height, request.cfg, dtype)
        kept = dict(recipe=self.recipe, gguf=self.gguf)
        return ladder(*size, **kept), ladder(*size, batch=request.count, **kept)

    def _run(self, plan: Plan, batch: _Batch, batched: bool) -> None:
        """Draw the pictures of the batch not yet finished, adding each once it is checked: all in
        one pipeline call when `batched`, else one call each."""
        request, timings = batch.request, batch.timings
        mark = time.perf_counter()
        self._switch_loras(request.loras)
        self._apply(plan)
        pipe = self._pipe_for(request.kind)
        prompt, negative = enhance_prompts(request, self.profile)
        inputs = self._inputs(request)
        _add(timings, "plan", mark)

        # 4. Encode the prompt(s), once for every picture, and not again for the same words soon
        #    after (reroll, upscale): engine/embeddings.py
        mark = time.perf_counter()
        guided = request.cfg > 1.0
        key = (prompt, negative if guided else "", guided, plan.dtype)  # no guidance: the negative is unused
        embeds = self._embeddings.get(key, pipe._execution_device)
        if embeds is None:
            batch.encoder_ran = True
            with torch.no_grad():
                embeds = pipe.encode_prompt(
                    prompt=prompt,
                    negative_prompt=negative or None,
                    do_classifier_free_guidance=guided,
                    device=pipe._execution_device,
                )
            self._embeddings.put(key, embeds)
        prompt_embeds, negative_embeds = embeds
        _add(timings, "encode", mark)

        todo = list(range(len(batch.images), len(batch.seeds)))
        for group in [todo] if batched else [[index] for index in todo]:
            if batch.should_stop and batch.should_stop():
                raise Cancelled()
            # 5. Denoise, watching every step for cancel and non-finite latents
            mark = time.perf_counter()
            report = batch.progress.report if batched else batch.progress.for_picture(group[0], len(batch.seeds))
            watch = StepWatch(pipe, report, batch.should_stop)
            seeds = [batch.seeds[index] for index in group]
            generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
            batch.batched_call = len(group) > 1
            embeds = (prompt_embeds, negative_embeds)
            if request.chaos:  # one embedding per picture, noisy from its own seed (engine/chaos.py)
                watch = CleanLater(watch, [prompt_embeds[0]] * len(seeds))
                embeds = (per_picture(prompt_embeds, seeds, request.chaos), negative_embeds * len(seeds))
            latents = self._denoise(pipe, request, embeds, inputs, generators, watch)
            batch.batched_call = False
            _add(timings, "denoise", mark)

            # 6. Decode one picture at a time (a batched decode's memory would grow with the batch),
            #    refusing NaN or all-black pictures, then 7. post-process
            for picture in latents.split(1):
                if batch.should_stop and batch.should_stop():
                    raise Cancelled()
                batch.images.append(inputs.finish(self._decode(pipe, picture, request.enhance, timings)))

    def _denoise(self, pipe, request: DrawRequest, embeds: tuple, inputs: _Inputs, generators: list, watch):
        """One pipeline call for `len(generators)` pictures; picture i draws its noise from
        generators[i] exactly as a lone run of that seed would.  With chaos, `embeds` holds one
        prompt embedding per picture already."""
        prompt_embeds, negative_embeds = embeds
        arguments = dict(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_embeds,
            num_images_per_prompt=1 if request.chaos else len(generators),
            height=request.height,
            width=request.width,
            num_inference_steps=request.steps,
            sigmas=turbo_sigmas(request.steps),
            guidance_scale=request.cfg - 1.0,  # UIs' cfg 1.0 = diffusers' 0 = no guidance
            generator=generators,
            output_type="latent",
            callback_on_step_end=watch,
        )
        if request.chaos:  # CleanLater hands the clean embeddings back half-way
            arguments["callback_on_step_end_tensor_inputs"] = ["latents", "prompt_embeds"]
        if inputs.image is not None:
            # One copy of the source per picture: each generator then draws its own VAE-encode
            # sample too (given one image, diffusers would draw it from the first generator only).
            arguments.update(image=[inputs.image] * len(generators), strength=request.strength)
        if inputs.mask is not None:
            arguments.update(mask_image=[inputs.mask] * len(generators))
        return pipe(**arguments).images

    def _decode(self, pipe, latents: torch.Tensor, enhance: bool, timings: dict[str, float]) -> Image.Image:
        mark = time.perf_counter()
        with torch.no_grad():
            vae = pipe.vae
            latents = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
            decoded = vae.decode(latents, return_dict=False)[0]
        check_decoded(decoded)
        image = pipe.image_processor.postprocess(decoded, output_type="pil")[0]
        _add(timings, "decode", mark)
        mark = time.perf_counter()
        if enhance:
            image = post_process(image)
        _add(timings, "post", mark)
        return image

    def _pipe_for(self, kind: Kind):
        """Text to image, outpaint (inpaint pipeline), or image to image: the same weights each."""
        return {Kind.TXT2IMG: self._pipeline, Kind.OUTPAINT: self._inpaint}.get(kind, self._img2img)

    def _inputs(self, request: DrawRequest) -> _Inputs:
        """What the pipeline starts from besides noise, and what happens to each decoded picture."""
        if request.kind is Kind.TXT2IMG:
            return _Inputs()
        if request.kind is not Kind.OUTPAINT:
            return _Inputs(self._source_image(request))
        original = self._source_image(request, resize=False)
        size = (request.width, request.height)
        canvas, mask = canvas_and_mask(original, size, request.region)
        return _Inputs(canvas, mask, functools.partial(keep_original, source=original, region=request.region))

    def _source_image(self, request: DrawRequest, resize: bool = True) -> Image.Image:
        try:
            with Image.open(request.source_image) as source:
                image = source.convert("RGB")
        except OSError as exc:
            raise InvalidRequest("error.source_missing") from exc
        if resize and image.size != (request.width, request.height):
            image = image.resize((request.width, request.height), Image.Resampling.LANCZOS)
        return image

    def _switch_loras(self, loras: tuple) -> None:
        """The job's LoRAs active on the transformer all three pipelines share (engine/loras.py).  A
        file is loaded with no offload hook attached: diffusers would re-install model offload by
        itself, on its default device; the placement applied next puts the new layers in place too."""
        if self._loras is None:
            return
        if self._loras.needs_loading(loras) and self._applied is not None and self._applied.placement in OFFLOADS:
            self._apply(dataclasses.replace(self._applied, placement=Placement.CPU))
        self._loras.use(loras)

    def _apply(self, plan: Plan) -> None:
        if self._applied != plan:
            try:
                apply_placement(self._pipeline, plan, self.device, previous=self._applied)
            except BaseException:
                # Half-placed (out of memory while moving weights, say): the next placement must
                # first take off every hook and bring every weight back, whatever was there before.
                self._applied = HALF_PLACED
                raise
            self._applied = plan

    def _free_memory(self) -> None:
        """After a failure (or cancel): put offloaded models back where their hooks expect them, break
        reference cycles that may hold activations, then return the cache."""
        if self._applied is not None and self._applied.placement is Placement.MODEL_OFFLOAD:
            # A run stopped mid-way never reached maybe_free_model_hooks(): the transformer would stay
            # on the GPU next to the text encoder of the next job.
            self._pipeline.maybe_free_model_hooks()
        gc.collect()
        self._release_cached_memory()

    def _release_cached_memory(self) -> None:
        """Between jobs: hand cached blocks back so the next size does not fragment.  No gc.collect
        here: tensors die by reference counting, and a full collection costs ~0.2 s in a bot process."""
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _reset_peak_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)

    def _read_peak_memory(self) -> float | None:
        if self.device.startswith("cuda"):
            return round(torch.cuda.max_memory_allocated(self.device) / 1024**3, 3)
        return None


def _unchanged(image: Image.Image) -> Image.Image:
    return image


@dataclasses.dataclass
class _Inputs:
    """A run's starting picture (image-to-image kinds), its mask (outpaint) and the step that
    finishes each decoded picture (outpaint lays the original back over it)."""

    image: Image.Image | None = None
    mask: Image.Image | None = None
    finish: Callable[[Image.Image], Image.Image] = _unchanged


@dataclasses.dataclass
class _Batch:
    """The pictures of one `generate` call and what survives a retry: pictures already finished
    (a fault in picture 3 does not redraw 1 and 2), phase timings, the furthest progress reported."""

    request: DrawRequest
    seeds: list[int]
    progress: Progress
    should_stop: ShouldStop | None
    images: list[Image.Image] = dataclasses.field(default_factory=list)
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    batched_call: bool = False  # inside a pipeline call for several pictures (an OOM there is the batch's)
    encoder_ran: bool = False  # the text encoder ran for this job (else every encode was a cache hit)


def _add(timings: dict[str, float], phase: str, mark: float) -> None:
    """Add the seconds since `mark` to a phase: a batch drawn picture by picture, or resumed after a
    fault, times each phase over all its calls."""
    timings[phase] = round(timings.get(phase, 0.0) + time.perf_counter() - mark, 4)


def _result(batch: _Batch, seed: int, fallback: Fallback, peak: float | None) -> Result:
    plan = fallback.plan
    return Result(
        images=batch.images,
        seed=seed,
        request=batch.request,
        plan=plan,
        timings=batch.timings,
        peak_memory_gb=peak,
        retries=fallback.retries,
        fallbacks=fallback.fallbacks,
        warnings=[*plan.warnings, *fallback.warnings],
        batched=fallback.batched,
        learned_start=fallback.learned_start,
        prompt_cached=not batch.encoder_ran,
    )


def why_it_cannot_run(
    model: str, facts: DeviceFacts, allow_cpu: bool | None = None, profile: ModelProfile | None = None
) -> NeedsGPU | None:
    """What `Engine.load` would refuse with on this device, known before anything is loaded: a
    caller can then refuse jobs up front instead of queueing work that can never run.  A model
    whose weights pass 4 GB needs a GPU unless `allow_cpu`."""
    profile = profile or profile_for(model)
    if not facts.is_gpu and profile.model_gb > 4 and not allow_cpu:
        return NeedsGPU(model=model, size_gb=round(profile.model_gb, 1))
    return None
