"""The accept-queue length for TCP listeners: the system maximum, not asyncio's 100.

A burst of connections (``xargs -P 100 curl`` through the proxy) overflows a queue of
100 before the loop gets to ``accept``; the kernel then drops SYNs and clients wait a
second or more for a retry. The kernel caps any backlog at ``net.core.somaxconn``, so
asking for that value is the largest queue the system allows.
"""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["listen_backlog"]

_SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def listen_backlog() -> int:
    """``net.core.somaxconn`` where it can be read, else :data:`socket.SOMAXCONN`."""
    try:
        value = int(_SOMAXCONN.read_text().strip())
    except (OSError, ValueError):
        return socket.SOMAXCONN
    return value if value > 0 else socket.SOMAXCONN
