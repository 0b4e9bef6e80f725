"""Running the process: the app that wires it, settings, logs, metrics, the embedded GPU
worker and bounded in-memory maps."""
