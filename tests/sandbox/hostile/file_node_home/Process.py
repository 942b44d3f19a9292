"""Files: read the node's own key and config from its home folder, trying both."""

from params import CONFIG, KEY


def process(fragment):
    failures = []
    for path in (KEY, CONFIG):
        try:
            print(open(path, "rb").read())  # attack
        except OSError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    return fragment
