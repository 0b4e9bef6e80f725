"""The `easel` command line: `run`, `console`, `draw`, `doctor` and `worker`."""
