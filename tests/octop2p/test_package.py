"""load_job: what a valid job looks like, and one refusal per rule (rule, file, line)."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pytest

from octop2p.engine._limits import RULE_OPTIONS, Limits
from octop2p.engine._package import (
    RULE_FILES,
    RULE_FUNCTIONS,
    RULE_GENERATOR,
    RULE_PATH,
    RULE_REQUIRES,
    RULE_SIGNATURE,
    RULE_SIZE,
    RULE_SYNTAX,
    RULE_YIELD,
    JobSpec,
    digest_files,
    load_job,
    missing_requirements,
)
from octop2p.errors import (
    Interrupted,
    JobFailed,
    JobRefused,
    NoNodeError,
    OctoError,
    UsageError,
)

NODE = Limits()

SPLIT = """\
def splitter():
    for lo in range(0, 100, 10):
        yield (lo, lo + 10)
"""
PROCESS = """\
def process(fragment):
    lo, hi = fragment
    return sum(range(lo, hi))
"""
MERGE = """\
def merger(result, results_dir):
    (results_dir / "sum.txt").write_text(str(result))
"""

# The seed's wordcount (004_695fc98210c6a74f.txt), print() made a function.
WORDCOUNT_HEAD = """\
import glob

text_files = glob.glob('Gutenberg SF/*.txt')

"""
WORDCOUNT_DICT = """\
def file_contents(file_name):
    f = open(file_name)
    try:
        return f.read()
    finally:
        f.close()

source = dict((file_name, file_contents(file_name))
              for file_name in text_files)
"""
WORDCOUNT_LAZY = """\
class DataSource(object):
    def __init__(self):
        self.text_files = glob.glob('Gutenberg SF/*.txt')

    def __len__(self):
        return len(self.text_files)

    def __iter__(self):
        return iter(self.text_files)

    def __getitem__(self, key):
        f = open(key)
        try:
            return f.read()
        finally:
            f.close()

source = DataSource()
"""
WORDCOUNT_TAIL = """\

def mapfn(key, value):
    for line in value.splitlines():
        for word in line.split():
            yield word.lower(), 1

def reducefn(key, value):
    return key, len(value)

def final(key, value):
    print(key, value)
"""


def make_package(root: Path, files: dict[str, str | bytes | None] | None = None) -> Path:
    """A valid package in `root`, with `files` added or replaced (None: left out)."""
    wanted = {"Split.py": SPLIT, "Process.py": PROCESS, "Merge.py": MERGE, **(files or {})}
    root.mkdir(parents=True, exist_ok=True)
    for rel, text in wanted.items():
        if text is None:
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text))
    return root


def make_script(root: Path, text: str, name: str = "job.py") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(textwrap.dedent(text))
    return path


def refused(path: Path, **kwargs: int) -> JobRefused:
    with pytest.raises(JobRefused) as info:
        load_job(path, NODE, **kwargs)
    return info.value


SCRIPT = (
    "source = {'a': 'x y'}\ndef mapfn(key, value):\n    yield key, 1\n"
    "def reducefn(key, values):\n    return key, len(values)\n"
)


# --- valid jobs ----------------------------------------------------------------------


def test_valid_package(tmp_path: Path) -> None:
    root = make_package(tmp_path / "sums")
    spec = load_job(root, NODE)
    assert spec.kind == "package"
    assert spec.root == root.resolve()
    assert spec.script is None
    assert spec.files == ("Merge.py", "Process.py", "Split.py")
    assert spec.options.name == "sums"
    assert spec.options.limits == NODE
    assert spec.warnings == ()
    assert not (spec.has_finalize or spec.has_final or spec.has_combinefn)


def test_package_files_leave_out_caches_hidden_results_and_links(tmp_path: Path) -> None:
    root = make_package(
        tmp_path / "sums",
        {
            "Merge.py": MERGE + "def finalize(results_dir):\n    pass\n",
            "lib/util.py": "def helper():\n    return 1\n",
            "data/input.txt": "1 2 3\n",
        },
    )
    for junk in [
        "__pycache__/Split.cpython-311.pyc",
        ".git/HEAD",
        ".env",
        "lib/.DS_Store",
        "sums-results/sum.txt",
    ]:
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("x")
    (root / "outside").symlink_to(tmp_path)
    spec = load_job(root, NODE)
    assert spec.has_finalize
    assert spec.files == (
        "Merge.py",
        "Process.py",
        "Split.py",
        "data/input.txt",
        "lib/util.py",
    )
    assert len(spec.warnings) == 1 and "outside is a symbolic link" in spec.warnings[0]


@pytest.mark.parametrize("source", [WORDCOUNT_DICT, WORDCOUNT_LAZY], ids=["dict", "DataSource"])
def test_seed_wordcount_loads(tmp_path: Path, source: str) -> None:
    path = make_script(tmp_path, WORDCOUNT_HEAD + source + WORDCOUNT_TAIL, "wordcount.py")
    spec = load_job(path, NODE)
    assert (spec.kind, spec.script, spec.files) == ("script", "wordcount.py", ("wordcount.py",))
    assert spec.root == tmp_path.resolve()
    assert spec.options.name == "wordcount"
    assert spec.has_final and not spec.has_combinefn and not spec.has_finalize
    assert spec.warnings == ()


def test_script_options_at_module_level(tmp_path: Path) -> None:
    path = make_script(
        tmp_path,
        SCRIPT
        + textwrap.dedent("""\
        name = "words"
        redundancy = 2
        partitions: int = 4
        requires = ["json", "os.path"]
        limits = {"memory_mb": 256, "cpu_seconds": 1000}
        def combinefn(key, values):
            return sum(values)
    """),
    )
    spec = load_job(path, NODE)
    opts = spec.options
    assert (opts.name, opts.redundancy, opts.partitions) == ("words", 2, 4)
    assert opts.requires == ("json", "os.path")
    assert opts.limits.memory_mb == 256
    assert opts.limits.cpu_seconds == NODE.cpu_seconds
    assert spec.has_combinefn
    assert any("limits.cpu_seconds = 1000" in w for w in spec.warnings)


def test_script_job_toml_beside_it_and_script_wins(tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text("redundancy = 3\nmap_batch = 7\n[limits]\nthreads = 1\n")
    path = make_script(tmp_path, SCRIPT + "redundancy = 2\nlimits = {'memory_mb': 100}\n")
    spec = load_job(path, NODE)
    assert spec.options.redundancy == 2
    assert spec.options.map_batch == 7
    assert (spec.options.limits.memory_mb, spec.options.limits.threads) == (100, 1)
    assert any("redundancy is set in both" in w for w in spec.warnings)


def test_options_of_the_other_kind_are_warned_about(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", {"job.toml": "partitions = 4\n"})
    assert any("partitions applies to MapReduce" in w for w in load_job(root, NODE).warnings)
    path = make_script(tmp_path / "s", SCRIPT + "ordered = False\n")
    assert any("ordered applies to split/merge" in w for w in load_job(path, NODE).warnings)


@pytest.mark.parametrize(
    ("file", "text"),
    [
        ("Process.py", "from helpers import process\n"),
        ("Process.py", "import helpers\nprocess = helpers.process\n"),
        ("Process.py", "process = lambda fragment: fragment\n"),
        ("Process.py", "def process(fragment, scale=2, *rest, flag=False):\n    return 1\n"),
        ("Process.py", "def process(*args):\n    return sum(x for x in args[0])\n"),
        (
            "Process.py",
            "try:\n    import fast\nexcept ImportError:\n"
            "    def process(fragment):\n        return [x for x in fragment]\n",
        ),
        ("Split.py", "def splitter():\n    yield from range(3)\n"),
        (
            "Split.py",
            "def splitter():\n    def key(x):\n        return -x\n"
            "    yield from sorted(range(3), key=key)\n",
        ),
        ("Split.py", "def splitter():\n    return 1\ndef splitter():\n    yield 2\n"),
    ],
)
def test_defined_in_other_forms(tmp_path: Path, file: str, text: str) -> None:
    root = make_package(tmp_path / "p", {"helpers.py": "def process(fragment):\n    return 1\n"})
    (root / file).write_text(text)
    load_job(root, NODE)


def test_star_import_is_not_refused_but_warned(tmp_path: Path) -> None:
    root = make_package(
        tmp_path / "p", {"Process.py": "from helpers import *\n", "helpers.py": PROCESS}
    )
    assert any("import *" in w for w in load_job(root, NODE).warnings)


def test_compiler_warnings_become_job_warnings(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", {"Process.py": PROCESS + "PATTERN = '\\d+'\n"})
    assert any(w.startswith("Process.py:4:") for w in load_job(root, NODE).warnings)


# --- the package digest ------------------------------------------------------------------


def test_digest_is_stable_lazy_and_covers_paths_and_contents(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", {"data.txt": "abc"})
    spec = load_job(root, NODE)
    first = spec.package_digest()
    assert len(first) == 32
    assert first == spec.package_digest() == digest_files(root, reversed(spec.files))
    (root / "data.txt").write_text("abd")  # read when asked, not at load time
    assert spec.package_digest() != first
    (root / "data.txt").write_text("abc")
    assert spec.package_digest() == first
    (root / "data.txt").rename(root / "data2.txt")
    assert load_job(root, NODE).package_digest() != first


def test_digest_refuses_paths_outside_the_package(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        digest_files(tmp_path, ["../etc/passwd"])


# --- rule: job path ------------------------------------------------------------------


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    exc = refused(tmp_path / "nope")
    assert (exc.rule, exc.file, exc.line) == (RULE_PATH, str(tmp_path / "nope"), None)
    assert "does not exist" in str(exc)


def test_path_that_is_neither_folder_nor_script(tmp_path: Path) -> None:
    (tmp_path / "job.txt").write_text("x")
    exc = refused(tmp_path / "job.txt")
    assert (exc.rule, exc.line) == (RULE_PATH, None)
    assert "ending in .py" in str(exc)


def test_a_package_file_given_as_a_script(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p")
    exc = refused(root / "Process.py")
    assert (exc.rule, exc.file, exc.line) == (RULE_PATH, "Process.py", None)
    assert "give the package's folder" in exc.detail


# --- rule: required files ------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["Split.py", "Process.py", "Merge.py"])
def test_missing_package_file(tmp_path: Path, missing: str) -> None:
    root = make_package(tmp_path / "p", {missing: None})
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_FILES, missing, None)
    assert f"{missing} is missing" in str(exc)


def test_missing_file_with_wrong_case_says_names_are_case_sensitive(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", {"Split.py": None})
    (root / "split.py").write_text(SPLIT)
    exc = refused(root)
    assert (exc.rule, exc.file) == (RULE_FILES, "Split.py")
    assert "case-sensitive" in exc.detail and "rename it to Split.py" in exc.detail


def test_empty_folder_points_to_scripts(tmp_path: Path) -> None:
    exc = refused(tmp_path)
    assert (exc.rule, exc.file, exc.line) == (RULE_FILES, None, None)
    assert "give the path of its .py file" in exc.detail


def test_package_file_that_is_a_folder(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", {"Merge.py": None})
    (root / "Merge.py").mkdir()
    assert (refused(root).rule, refused(root).file) == (RULE_FILES, "Merge.py")


# --- rule: required functions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "name"),
    [("Split.py", "splitter"), ("Process.py", "process"), ("Merge.py", "merger")],
)
def test_missing_package_function(tmp_path: Path, file: str, name: str) -> None:
    root = make_package(tmp_path / "p")
    (root / file).write_text("x = 1\n")
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_FUNCTIONS, file, None)
    assert f"{name} is not defined at the top level of {file}" in str(exc)


def test_function_only_nested_or_misnamed_is_missing(tmp_path: Path) -> None:
    text = "class Job:\n    def process(self, f):\n        return f\n"
    root = make_package(tmp_path / "p", {"Process.py": text + "def Process(f):\n    return f\n"})
    exc = refused(root)
    assert (exc.rule, exc.file) == (RULE_FUNCTIONS, "Process.py")
    assert "found Process" in exc.detail


@pytest.mark.parametrize("missing", ["source", "mapfn", "reducefn"])
def test_missing_script_name(tmp_path: Path, missing: str) -> None:
    parts = {
        "source": "source = {'a': 'x y'}\n",
        "mapfn": "def mapfn(key, value):\n    yield key, 1\n",
        "reducefn": "def reducefn(key, values):\n    return key, len(values)\n",
    }
    exc = refused(make_script(tmp_path, "".join(t for n, t in parts.items() if n != missing)))
    assert (exc.rule, exc.file, exc.line) == (RULE_FUNCTIONS, "job.py", None)
    assert f"{missing} is not defined" in exc.detail


# --- rule: signature ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "line"),
    [
        ("Split.py", "import os\n\ndef splitter(n):\n    yield n\n", 3),
        ("Process.py", "def process():\n    return 1\n", 1),
        ("Process.py", "def process(a, b):\n    return 1\n", 1),
        ("Process.py", "def process(fragment, *, mode):\n    return 1\n", 1),
        ("Process.py", "\nprocess = lambda: 1\n", 2),
        ("Process.py", "async def process(fragment):\n    return 1\n", 1),
        ("Merge.py", "def merger(result):\n    pass\n", 1),
        ("Merge.py", MERGE + "def finalize():\n    pass\n", 3),
    ],
)
def test_package_signature(tmp_path: Path, file: str, text: str, line: int) -> None:
    root = make_package(tmp_path / "p")
    (root / file).write_text(text)
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_SIGNATURE, file, line)
    assert "write `def " in exc.detail


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("mapfn", "def mapfn(key):\n    yield key, 1\n"),
        ("reducefn", "def reducefn(key, values, extra):\n    return key, 1\n"),
        ("final", "def final(pair):\n    print(pair)\n"),
        ("combinefn", "def combinefn():\n    return 1\n"),
    ],
)
def test_script_signature(tmp_path: Path, name: str, bad: str) -> None:
    path = make_script(tmp_path, SCRIPT + "\n" + bad)
    exc = refused(path)
    assert (exc.rule, exc.file, exc.line) == (RULE_SIGNATURE, "job.py", 7)
    assert f"octop2p calls {name}(" in exc.detail


# --- rule: splitter is a generator ------------------------------------------------------


def test_splitter_that_never_yields(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", {"Split.py": "\ndef splitter():\n    return [1, 2]\n"})
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_GENERATOR, "Split.py", 2)
    assert "yield from" in exc.detail


# --- rule: only splitter yields ---------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "line", "name"),
    [
        (
            "Process.py",
            "import math\n\n\n\ndef process(fragment):\n\n    yield fragment\n",
            7,
            "process",
        ),
        ("Merge.py", "def merger(result, results_dir):\n    yield from result\n", 2, "merger"),
        ("lib/util.py", "def chunks(xs):\n    for x in xs:\n        yield x\n", 3, "chunks"),
        (
            "Process.py",
            "class Job:\n    def run(self):\n        yield 1\n"
            "def process(fragment):\n    return 1\n",
            3,
            "Job.run",
        ),
        (
            "Process.py",
            "gen = lambda: (yield)\ndef process(fragment):\n    return 1\n",
            1,
            "<lambda>",
        ),
        (
            "Split.py",
            "def splitter():\n    def inner():\n        yield 1\n    yield from inner()\n",
            3,
            "splitter.inner",
        ),
        (
            "Split.py",
            "class S:\n    def splitter(self):\n        yield 1\ndef splitter():\n    yield 2\n",
            3,
            "S.splitter",
        ),
        ("helpers.py", "def splitter():\n    yield 1\n", 2, "splitter"),
    ],
)
def test_yield_outside_splitter(tmp_path: Path, file: str, text: str, line: int, name: str) -> None:
    root = make_package(tmp_path / "p")
    (root / file).parent.mkdir(parents=True, exist_ok=True)
    (root / file).write_text(text)
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_YIELD, file, line)
    assert f"but {name}() does" in exc.detail


def test_yield_message_reads_as_the_contract_says(tmp_path: Path) -> None:
    text = "\n" * 6 + "def process(f):\n    yield f\n"
    root = make_package(tmp_path / "p", {"Process.py": text})
    exc = refused(root)
    assert str(exc).startswith(
        "Process.py:8: yield outside splitter(): only splitter() in Split.py may yield"
    )
    assert str(exc).endswith("(rule: only splitter yields)")


def test_several_yields_are_all_named(tmp_path: Path) -> None:
    root = make_package(
        tmp_path / "p",
        {
            "Process.py": "def process(f):\n    yield f\n",
            "Merge.py": "def merger(r, d):\n    yield r\n",
        },
    )
    exc = refused(root)
    assert (exc.file, exc.line) == ("Merge.py", 2)
    assert "also at Process.py:2" in exc.detail


def test_generator_expressions_are_fine(tmp_path: Path) -> None:
    text = "def process(f):\n    return sum(x * x for x in range(*f))\n"
    load_job(make_package(tmp_path / "p", {"Process.py": text}), NODE)


# --- rule: syntax ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "text", "line", "words"),
    [
        ("Process.py", "def process(fragment):\n    return (1\n\n", 2, "never closed"),
        ("lib/x.py", "x = 1\nreturn x\n", 2, "'return' outside function"),
        ("Merge.py", b"def merger(r, d):\n    pass\x00\n", None, "null bytes"),
        ("Split.py", b"def splitter():\n    yield '\xff'\n", 2, "utf-8"),
    ],
)
def test_syntax_error_in_package(
    tmp_path: Path, file: str, text: str | bytes, line: int | None, words: str
) -> None:
    root = make_package(tmp_path / "p")
    (root / file).parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        (root / file).write_bytes(text)
    else:
        (root / file).write_text(text)
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_SYNTAX, file, line)
    assert words in exc.detail


def test_python2_print_in_the_seed_is_a_syntax_error(tmp_path: Path) -> None:
    text = (
        WORDCOUNT_HEAD
        + WORDCOUNT_DICT
        + WORDCOUNT_TAIL.replace("print(key, value)", "print key, value")
    )
    exc = refused(make_script(tmp_path, text, "wordcount.py"))
    assert (exc.rule, exc.file, exc.line) == (RULE_SYNTAX, "wordcount.py", 24)
    assert "Missing parentheses" in exc.detail


# --- rule: job options -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "line", "words"),
    [
        ('name = "x"\nredundancey = 2\n', 2, "did you mean 'redundancy'"),
        ("memory_mb = 256\n", 1, "put it in the [limits] table"),
        ("[limits]\nmemroy_mb = 256\n", 2, "did you mean 'memory_mb'"),
        ('ordered = true\nredundancy = "2"\n', 2, "expected a whole number, got a string"),
        ("redundancy = true\n", 1, "got a boolean"),
        ("\n[limits]\ncpu_seconds = 0\n", 3, "must be 1 or more"),
        ("limits = { wall_seconds = -5 }\n", 1, "must be 1 or more"),
        ("limits.threads = 2.5\n", 1, "got a number with a fraction"),
        ("limits = 5\n", 1, "expected a table of limits"),
        ("ordered = 1\n", 1, "expected true or false"),
        ('requires = "numpy"\n', 1, "expected a list of module names"),
        ('requires = ["numpy-stubs"]\n', 1, "is not a module name"),
        ('name = "../up"\n', 1, "not a usable job name"),
        ("redundancy = \n", 1, "not valid TOML"),
    ],
)
def test_job_toml(tmp_path: Path, toml: str, line: int, words: str) -> None:
    root = make_package(tmp_path / "p", {"job.toml": toml})
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_OPTIONS, "job.toml", line)
    assert words in exc.detail


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("import os\nredundancy = os.cpu_count()\n", 2, "must be a literal"),
        ("limits = dict(memory_mb=1)\n", 1, "must be a literal"),
        ("limits = {\n    'memory_mb': 1,\n    'threds': 2,\n}\n", 3, "did you mean 'threads'"),
        ("\npartitions = '4'\n", 2, "expected a whole number"),
        ("name = ''\n", 1, "not a usable job name"),
    ],
)
def test_script_options(tmp_path: Path, text: str, line: int, words: str) -> None:
    exc = refused(make_script(tmp_path, text + SCRIPT))
    assert (exc.rule, exc.file, exc.line) == (RULE_OPTIONS, "job.py", line)
    assert words in exc.detail


def test_unusable_folder_name_asks_for_a_name(tmp_path: Path) -> None:
    exc = refused(make_package(tmp_path / ".hidden"))
    assert exc.rule == RULE_OPTIONS
    assert 'set name = "..."' in exc.detail
    assert load_job(make_package(tmp_path / ".hidden", {"job.toml": 'name = "ok"\n'}), NODE)


# --- rule: requires ------------------------------------------------------------------


def test_missing_requirements() -> None:
    assert missing_requirements(["json", "os.path", "no_such_mod_x1", "no_such_mod_x1.sub"]) == [
        "no_such_mod_x1",
        "no_such_mod_x1.sub",
    ]


def test_requires_in_job_toml(tmp_path: Path) -> None:
    root = make_package(
        tmp_path / "p", {"job.toml": 'name = "p"\nrequires = ["json", "no_such_x2"]\n'}
    )
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_REQUIRES, "job.toml", 2)
    assert "no_such_x2" in exc.detail and "pip install no_such_x2" in exc.detail


def test_requires_in_script(tmp_path: Path) -> None:
    exc = refused(make_script(tmp_path, SCRIPT + "requires = ['no_such_x3.sub']\n"))
    assert (exc.rule, exc.file, exc.line) == (RULE_REQUIRES, "job.py", 6)


# --- rule: package size ------------------------------------------------------------------


def test_package_over_the_size_limit(tmp_path: Path) -> None:
    root = make_package(tmp_path / "p", {"data/big.bin": b"\0" * 5000})
    exc = refused(root, package_bytes=4096)
    assert (exc.rule, exc.file, exc.line) == (RULE_SIZE, None, None)
    assert "over this node's limit of 4096 bytes" in exc.detail
    assert "the largest is data/big.bin (5000 bytes)" in exc.detail
    assert load_job(root, NODE, package_bytes=1 << 20).files[-1] == "data/big.bin"


def test_script_over_the_size_limit(tmp_path: Path) -> None:
    path = make_script(tmp_path, SCRIPT + "#" * 200 + "\n")
    assert refused(path, package_bytes=100).rule == RULE_SIZE


# --- capping ------------------------------------------------------------------


def test_job_limits_are_capped_to_the_node(tmp_path: Path) -> None:
    node = Limits(memory_mb=256, cpu_seconds=30)
    root = make_package(
        tmp_path / "p", {"job.toml": "[limits]\nmemory_mb = 1024\ncpu_seconds = 10\n"}
    )
    spec = load_job(root, node)
    assert spec.options.limits == Limits(memory_mb=256, cpu_seconds=10)
    assert spec.warnings == (
        "limits.memory_mb = 1024 is above this node's limit of 256; the job runs with 256",
    )


def test_unasked_limits_are_the_nodes(tmp_path: Path) -> None:
    node = Limits(memory_mb=4096, threads=4)
    spec = load_job(make_package(tmp_path / "p"), node)
    assert spec.options.limits == node and spec.warnings == ()


# --- errors ------------------------------------------------------------------


def test_error_classes() -> None:
    assert [
        c.exit_code
        for c in (OctoError, UsageError, JobRefused, JobFailed, NoNodeError, Interrupted)
    ] == [1, 2, 1, 1, 69, 130]
    assert str(NoNodeError()) == NoNodeError.description()
    assert str(UsageError("bad flag")) == "bad flag"
    failed = JobFailed(
        "ZeroDivisionError: division by zero", "Traceback ...", None, "Process.py", 3
    )
    assert str(failed) == "Process.py:3: ZeroDivisionError: division by zero"
    assert failed.message == "ZeroDivisionError: division by zero"
    assert str(JobFailed("too big", rule="fragment size")) == "too big (rule: fragment size)"


def test_errors_survive_pickling() -> None:
    exc = JobRefused(
        "only splitter yields",
        "Process.py",
        7,
        "yield outside splitter(): only splitter() in Split.py may yield",
    )
    assert str(exc) == (
        "Process.py:7: yield outside splitter(): only splitter() in Split.py "
        "may yield (rule: only splitter yields)"
    )
    again = pickle.loads(pickle.dumps(exc))
    assert (again.rule, again.file, again.line, again.detail) == (
        exc.rule,
        exc.file,
        exc.line,
        exc.detail,
    )
    assert str(again) == str(exc)
    failed = pickle.loads(pickle.dumps(JobFailed("m", "tb", "r", "f.py", 1)))
    assert (str(failed), failed.traceback) == ("f.py:1: m (rule: r)", "tb")


def test_jobspec_is_frozen(tmp_path: Path) -> None:
    spec = load_job(make_package(tmp_path / "p"), NODE)
    assert isinstance(spec, JobSpec)
    with pytest.raises(AttributeError):
        spec.kind = "script"  # type: ignore[misc]
    hash(spec)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_package(tmp_path / "p", {"lib/x.py": "x = 1\n"})
    read_bytes = Path.read_bytes

    def denied(self: Path) -> bytes:  # as chmod 0 would, also when the tests run as root
        if self.name == "x.py":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    exc = refused(root)
    assert (exc.rule, exc.file, exc.line) == (RULE_PATH, "lib/x.py", None)
    assert "Permission denied" in exc.detail
