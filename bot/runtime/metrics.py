"""Prometheus metrics, served on EASEL_METRICS_PORT when it is set (bot/runtime/health.py).

One registry per service (tests build many services in one process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

RUN_BUCKETS = (0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300)
WAIT_BUCKETS = (0.1, 1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600)
VRAM_BUCKETS = (1, 2, 4, 6, 8, 10, 12, 16, 24, 40, 80)


def size_label(width: int, height: int) -> str:
    """Pixel count rounded to the nearest common square, so label cardinality stays tiny."""
    side = (width * height) ** 0.5
    return f"{min((256, 512, 768, 1024, 1536, 2048), key=lambda s: abs(s - side))}px"


class Metrics:
    def __init__(
        self,
        queue_depth: Callable[[], int],
        live_workers: Callable[[], int],
        recipes: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("easel_queue_depth", "Jobs waiting in the fair queue", registry=r)
        self.queue_depth.set_function(queue_depth)
        self.live_workers = Gauge("easel_live_workers", "GPU workers able to take jobs", registry=r)
        self.live_workers.set_function(live_workers)
        if recipes is not None:
            r.register(_WorkersByRecipe(recipes))
        self.jobs = Counter("easel_jobs", "Jobs by final status", ["status"], registry=r)
        self.recipes = Counter(
            "easel_jobs_by_recipe",
            "Jobs drawn, by the weights they ran on: none (the model's own), int8 or int4",
            ["recipe"],
            registry=r,
        )
        self.accepted = Counter("easel_jobs_accepted", "Jobs accepted into the queue", registry=r)
        self.work_units = Counter(
            "easel_work_units",
            "Work units (1 = one 1024x1024 picture, 8 steps, no guidance) of accepted jobs and of pictures drawn",
            ["stage"],
            registry=r,
        )
        self.run_seconds = Histogram(
            "easel_job_run_seconds", "Generation time by size", ["size"], buckets=RUN_BUCKETS, registry=r
        )
        self.wait_seconds = Histogram("easel_job_wait_seconds", "Time in queue", buckets=WAIT_BUCKETS, registry=r)
        self.fallbacks = Counter("easel_fallbacks", "OOM ladder steps and NaN retries", ["kind"], registry=r)
        self.peak_vram = Histogram("easel_job_peak_vram_gb", "Peak VRAM per job", buckets=VRAM_BUCKETS, registry=r)
        self.platform_errors = Counter(
            "easel_platform_errors", "Failed sends to a chat platform", ["platform"], registry=r
        )
        self.learned_starts = Counter(
            "easel_learned_starts",
            "Jobs started below the planner's choice because that size ran out of memory lately",
            registry=r,
        )
        self.prompt_cache = Counter(
            "easel_prompt_cache", "Prompt encodings served from the embedding cache or not", ["result"], registry=r
        )
        self.refusals = Counter(
            "easel_refusals",
            "Drawings refused by moderation (blocked, sensitive, cooldown), as too big (too_big)"
            " or for lack of disk (disk)",
            ["reason"],
            registry=r,
        )
        self.expired_pictures = Counter(
            "easel_pictures_expired", "Picture files removed by retention (EASEL_KEEP_DAYS)", registry=r
        )
        self.expired_bytes = Counter("easel_expired_bytes", "Bytes freed by retention", registry=r)
        self.dead_deliveries = Counter(
            "easel_dead_deliveries", "Pictures whose delivery was given up (see /queue)", registry=r
        )

    def watch_disk(self, free_gb: Callable[[], float], low: Callable[[], bool]) -> None:
        """Free space on the data disk, and whether the guard (EASEL_MIN_FREE_GB) refuses jobs."""
        r = self.registry
        Gauge("easel_disk_free_gb", "Free GB on the data disk", registry=r).set_function(free_gb)
        Gauge("easel_disk_low", "1 while new jobs are refused for lack of disk", registry=r).set_function(
            lambda: float(low())
        )

    def job_done(
        self,
        width: int,
        height: int,
        seconds: float,
        fallbacks: int,
        retries: int,
        peak_gb,
        learned_start: bool = False,
        prompt_cached: bool = False,
        recipe: str = "none",
    ) -> None:
        self.jobs.labels("done").inc()
        self.recipes.labels(recipe).inc()
        if learned_start:
            self.learned_starts.inc()
        self.prompt_cache.labels("hit" if prompt_cached else "miss").inc()
        self.run_seconds.labels(size_label(width, height)).observe(seconds)
        if fallbacks:
            self.fallbacks.labels("oom").inc(fallbacks)
        if retries:
            self.fallbacks.labels("nan").inc(retries)
        if peak_gb is not None:
            self.peak_vram.observe(peak_gb)

    def value(self, name: str, **labels: str) -> float:
        """A current sample, for /stats and tests."""
        return self.registry.get_sample_value(name, labels) or 0.0


class _WorkersByRecipe(Collector):
    """Live GPU workers by the weights they loaded, read when scraped (workers come and go)."""

    def __init__(self, recipes: Callable[[], dict[str, int]]) -> None:
        self._recipes = recipes

    def collect(self):
        family = GaugeMetricFamily(
            "easel_workers_by_recipe", "Live GPU workers by weights: none, int8 or int4", labels=["recipe"]
        )
        for recipe, count in sorted(self._recipes().items()):
            family.add_metric([recipe], count)
        yield family
