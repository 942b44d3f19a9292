"""Merge output: one file of 8 MB, in 64 KB writes."""


def merger(result, results_dir):
    with open(results_dir / "huge.bin", "ab") as f:
        for _ in range(128):
            f.write(b"x" * 65536)  # attack
