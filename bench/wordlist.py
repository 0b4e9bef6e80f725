"""Block-list matching on every prompt: what a list of 100, 1,000 and 5,000 terms costs per prompt,
for an ordinary prompt and one full of spelled-out letters (the slow path), against normalizing the
prompt alone (the floor). Run: `python bench/wordlist.py` (a few seconds).
"""

from __future__ import annotations

import random
import statistics
import string
import sys
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bot.community.wordlist import Prepared, WordList  # noqa: E402

SIZES = (100, 1_000, 5_000)
RUNS = 200
PROMPTS = {
    "ordinary, 370 chars": "a lighthouse at dusk on a rocky coast, oil painting, dramatic clouds, warm light, "
    "seagulls, waves crashing, highly detailed " * 3,
    "spelled out, 150 chars": "a n e o n s i g n t h a t r e a d s c l a s s i c " * 3,
}


def median_ms(call, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    rng = random.Random(1)
    print(f"{'terms':>6} {'build ms':>9}  {'prompt':<24} {'normalize ms':>13} {'find ms':>8} {'ratio':>6}")
    for size in SIZES:
        terms = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 10))) for _ in range(size)]
        start = time.perf_counter()
        words = WordList(terms)
        build = (time.perf_counter() - start) * 1000
        for label, prompt in PROMPTS.items():
            floor = median_ms(lambda prompt=prompt: Prepared.of(prompt))
            found = median_ms(lambda prompt=prompt, words=words: words.find(prompt))
            print(f"{size:>6} {build:>9.0f}  {label:<24} {floor:>13.3f} {found:>8.3f} {found / floor:>6.1f}")


if __name__ == "__main__":
    main()
