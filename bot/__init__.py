"""easel's bot side: commands, rules, queue, worker and the chat adapters."""
