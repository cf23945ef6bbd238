"""The local engine: persistent worker processes for functions, threads for commands,
a watchdog per run."""
