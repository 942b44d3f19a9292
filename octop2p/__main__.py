"""python -m octop2p."""

from octop2p.cli import main
from octop2p.cli._exit import run_command

run_command(main)
