"""Files: read a file outside the job's folder and smuggle it out in output and result."""

from params import CANARY


def process(fragment):
    with open(CANARY) as f:  # attack
        stolen = f.read()
    print(stolen)
    return stolen
