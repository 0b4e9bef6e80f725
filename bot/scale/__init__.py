"""Scale-out over Redis Streams: the bot hands fairly chosen jobs to `easel worker` processes.

`config` holds the knobs; `protocol` the keys and typed Redis calls both sides share, `scripts` the
Lua behind them and `results` the outcome on the wire; `pool` is the bot's side (same interface as
`bot.runtime.worker.GpuWorker`) and `remote` the worker process.
See docs/SCALE_OUT.md.
"""
