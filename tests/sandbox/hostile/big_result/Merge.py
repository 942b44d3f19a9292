"""Prints a marker if a result ever reaches it."""


def merger(result, results_dir):
    print("MERGER-SAW-A-RESULT")
