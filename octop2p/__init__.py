"""octop2p: peer-to-peer volunteer computing on a LAN, with job code sandboxed."""

from __future__ import annotations

__version__ = "0.1.0"
