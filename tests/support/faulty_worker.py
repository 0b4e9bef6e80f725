"""`python -m tests.support.faulty_worker [--crash-on TEXT] [--slow-on TEXT]`: the real `easel worker`
(bot.cli.main, same settings from the environment) whose loaded engine is a `FaultyEngine`.  For
tests/test_scale_workers.py, which needs real worker processes that die or dawdle on cue."""

from __future__ import annotations

import argparse
import sys

from tests.support.faults import FaultyEngine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faulty_worker")
    parser.add_argument("--crash-on", help="a job whose prompt contains this kills the worker process")
    parser.add_argument("--slow-on", help="a job whose prompt contains this takes 0.2 s longer a step")
    args = parser.parse_args(argv)

    from bot.cli import main as cli
    from engine.engine import Engine

    load = Engine.load

    def faulty_load(*arguments, **keywords):
        return FaultyEngine(load(*arguments, **keywords), crash_on=args.crash_on, slow_on=args.slow_on)

    Engine.load = faulty_load  # this process only: the worker loads its engine through Engine.load
    return cli.main(["worker"])


if __name__ == "__main__":
    sys.exit(main())
