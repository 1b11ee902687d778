"""The sans-IO protocol core: codec, crypto, channels, recovery, congestion, paths, session.

Nothing here does I/O or reads a clock: tests/unit/test_layering.py enforces it."""
