"""ResIP: a resilient tunnelling protocol (sans-IO core, asyncio adapters, server)."""

__version__ = "0.1.0"
