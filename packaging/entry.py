"""Entry point of the PyInstaller bundle: the ``octop2p`` CLI, GUI included.

In a frozen app ``sys.executable`` is this bundle, not a Python that understands
``-m sandbox._forkserver``, so the node starts its fork server as
``octop2p --octop2p-fork-server FD`` (``octop2p/_children.py``) and this entry point
routes that argv to ``sandbox._forkserver.main`` before anything of the CLI is imported:
the fork server must stay single-threaded and light, and users never type the flag.
"""

import sys

# The flag octop2p.engine._forkstart.fork_server_command gives a frozen app (a test checks they
# agree); spelled out here so that a CLI start imports nothing of the sandbox for it.
_FORK_SERVER_FLAG = "--octop2p-fork-server"

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == _FORK_SERVER_FLAG:
        from sandbox._forkserver import main as fork_server_main

        sys.exit(fork_server_main([sys.argv[0], sys.argv[2]]))
    from octop2p.cli import main
    from octop2p.cli._exit import run_command

    run_command(lambda: main(prog_name="octop2p"))
