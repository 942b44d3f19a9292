"""Files: read a secret in the node's working directory, by absolute or relative path.

It also prints its sys.path, where the node's working directory would show if Python
had put it there (it did, and Landlock then allowed reading everything below it).
"""

import os
import sys

from params import HOW, SECRET


def process(fragment):
    print("sys.path:", sys.path)
    path = SECRET if HOW == "absolute" else os.path.relpath(SECRET)  # from the job's folder
    with open(path) as f:  # attack
        stolen = f.read()
    print(stolen)
    return stolen
