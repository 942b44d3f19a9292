"""python -m octop2p."""

from octop2p.cli import entry

entry()
