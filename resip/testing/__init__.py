"""Test helpers shipped with ResIP, so users can exercise their own setups too.

Contract: nothing here touches real sockets or real clocks; :mod:`resip.testing.netsim`
drives sans-IO endpoints in virtual time, deterministically from one seed.
"""

from __future__ import annotations

from resip.testing.netsim import (
    DeliverHook,
    Fate,
    LinkSpec,
    LinkStats,
    NetSim,
    SimEndpoint,
    SimStats,
    TraceRecord,
)

__all__ = [
    "DeliverHook",
    "Fate",
    "LinkSpec",
    "LinkStats",
    "NetSim",
    "SimEndpoint",
    "SimStats",
    "TraceRecord",
]
