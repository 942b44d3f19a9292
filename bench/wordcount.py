"""Wordcount of a seeded 20 MB corpus: `octop2p run -w 2` against Counter and Pool(2).

    python bench/wordcount.py [--files 200] [--kb 100]

The corpus: 200 files of about 100 KB, words drawn from a Zipf law over a 10,000-word
vocabulary, seeded so every run sees the same text. octop2p runs the octo.py-style
script below (the seed's mapfn, with a combiner) as a user would, process start
included. The baselines run in this process: one `collections.Counter`, and
`multiprocessing.Pool(2)` mapping files to Counters.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import random
import tempfile
import time
from pathlib import Path

from _common import run_octop2p

SCRIPT = '''\
import glob

source = {name: open(name).read() for name in sorted(glob.glob("corpus/*.txt"))}


def mapfn(key, value):
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1


def combinefn(key, values):
    return sum(values)


def reducefn(key, values):
    return key, sum(values)
'''


def make_corpus(root: Path, files: int, kb: int, seed: int = 20261122) -> None:
    rng = random.Random(seed)
    vocab = [
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10)))
        for _ in range(10_000)
    ]
    vocab = [w.capitalize() if i % 7 == 0 else w for i, w in enumerate(vocab)]
    weights = [1 / (rank + 1) for rank in range(len(vocab))]  # Zipf, s = 1
    (root / "corpus").mkdir()
    for i in range(files):
        words = rng.choices(vocab, weights, k=kb * 1024 // 6)
        lines = [" ".join(words[j : j + 12]) for j in range(0, len(words), 12)]
        (root / "corpus" / f"{i:04}.txt").write_text("\n".join(lines) + "\n")
    (root / "wordcount_bench.py").write_text(SCRIPT)


def count_file(path: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        counts.update(word.lower() for word in line.split())
    return counts


def counter_baseline(files: list[Path]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for path in files:
        counts.update(count_file(path))
    return counts


def pool_baseline(files: list[Path]) -> collections.Counter[str]:
    total: collections.Counter[str] = collections.Counter()
    with multiprocessing.Pool(2) as pool:
        for counts in pool.imap_unordered(count_file, files):
            total.update(counts)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--kb", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_corpus(root, args.files, args.kb)
        files = sorted((root / "corpus").glob("*.txt"))
        size = sum(p.stat().st_size for p in files)

        started = time.perf_counter()
        expected = counter_baseline(files)
        t_counter = time.perf_counter() - started

        started = time.perf_counter()
        pooled = pool_baseline(files)
        t_pool = time.perf_counter() - started
        assert pooled == expected

        out = root / "out"
        t_ours, _report = run_octop2p(root / "wordcount_bench.py", "-w", str(args.workers),
                                      "-o", str(out), cwd=root)
        got = {}
        for line in (out / "output.txt").read_text().splitlines():
            key, (_, n) = json.loads(line)
            got[key] = n
        assert got == dict(expected), "octop2p's counts differ from Counter's"

    print(f"corpus                          {size / 1e6:.1f} MB, {len(files)} files, "
          f"{sum(expected.values()):,} words, {len(expected):,} distinct")
    print(f"collections.Counter, 1 process   {t_counter:6.2f} s")
    print(f"multiprocessing.Pool(2)          {t_pool:6.2f} s  ({t_pool / t_counter:.2f}x Counter)")
    print(f"octop2p run -w {args.workers} (whole command) {t_ours:6.2f} s  "
          f"({t_ours / t_counter:.2f}x Counter; target <= 1.3x)")


if __name__ == "__main__":
    main()
