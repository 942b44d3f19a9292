"""python -m octop2p."""

from octop2p.cli import main

main()
