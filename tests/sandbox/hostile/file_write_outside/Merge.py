"""Files: the merger writes outside results_dir, straight and through a symlink."""

import os

from params import TARGET, VIA_LINK


def merger(result, results_dir):
    try:
        with open(TARGET, "w") as f:  # attack
            f.write("pwned")
    except OSError as exc:
        failure = exc
    # A link made in results_dir, where the merger may write, pointing outside it.
    link = results_dir / "innocent.txt"
    try:
        os.symlink(VIA_LINK, link)
        with open(link, "w") as f:
            f.write("pwned")
    except OSError:
        pass
    raise failure
