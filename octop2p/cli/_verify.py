"""``octop2p verify RESULTS``: are these results what the chief signed?"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from octop2p._home import Home
    from protocol import NodeId


def known_signers(home: Home) -> list[tuple[NodeId, str]]:
    """The nodes this home can vouch for: itself, and the swarm members it pinned."""
    from octop2p._home import HomeError

    known: list[tuple[NodeId, str]] = []
    if home.key_path.exists():
        known.append((home.load_or_create_identity().node_id, "this node"))
    try:
        known += [(peer, "a pinned swarm member") for peer in home.pinned()]
    except HomeError:
        pass  # no swarm (yet): only this node's own results can be vouched for
    return known


def register(main: click.Group, common_options: Any, handle_errors: Any, err: Any,
             setup_logging: Any) -> None:
    """Add ``verify`` to the ``octop2p`` group."""

    @main.command()
    @click.argument("results", type=click.Path(path_type=Path))
    @click.option("--chief", help="Accept a manifest signed by this node id (or its prefix) "
                  "even if this home does not know it.")
    @common_options
    @handle_errors
    def verify(results: Path, chief: str | None, home: Path | None, as_json: bool,
               verbose: int) -> None:
        """Check RESULTS (a folder or .tar.gz) against its signed manifest.json.

        Exit 0: every file matches and the chief's signature holds; 1: a mismatch or a
        bad signature (the message names the file or the reason); 2: usage."""
        from octop2p._home import Home
        from octop2p.engine._verify import verify_results

        setup_logging(verbose)
        verdict = verify_results(results, known_signers(Home.locate(home)), chief)
        if as_json:
            click.echo(json.dumps(verdict.to_json()))
        # Not markup: file names in the verdict come from the results, which may be hostile.
        err.print(verdict.line(), style="green" if verdict.ok else "bold red", markup=False,
                  highlight=False)
        if not verdict.ok:
            sys.exit(1)
