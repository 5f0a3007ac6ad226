"""The command runners, between the CLI and the library parts: one module per command (scan, evaluate,
robustness, prepare, synth, protocol), wiring only. Training lives in ``gmdf_cli.train``."""
