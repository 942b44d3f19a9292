"""The generated parts of SPEC.md: the state diagram and the message tables.

`python -m protocol._spec` prints both; paste each between its markers in SPEC.md. A test
checks that SPEC.md matches, so the document cannot drift from the code.
"""

from __future__ import annotations

import re
from pathlib import Path

from ._messages import message_types
from ._schema import Maybe, Nested, Seq, Struct
from ._state import render_mermaid

SPEC_PATH = Path(__file__).with_name("SPEC.md")


def _fields_table(cls: type[Struct]) -> list[str]:
    rows = ["| # | field | kind |", "|---|---|---|"]
    for number, (name, kind) in enumerate(cls._SCHEMA):
        note = ""
        if number >= cls._REQUIRED:
            note = f" (optional, default {cls._DEFAULTS[number - cls._REQUIRED]!r})"
        rows.append(f"| {number} | `{name}` | {kind.describe()}{note} |")
    return rows


def _nested(cls: type[Struct]) -> list[type[Struct]]:
    found: list[type[Struct]] = []
    for _, kind in cls._SCHEMA:
        while isinstance(kind, Maybe | Seq):
            kind = kind.kind
        if isinstance(kind, Nested):
            found.append(kind.cls)
    return found


def render_messages() -> str:
    """Markdown: one table per message (type, version, fields), then nested structs."""
    out: list[str] = []
    nested: list[type[Struct]] = []
    for cls in message_types():
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        out += [f"#### {cls.TYPE} `{cls.__name__}` (version {cls.VERSION})", "", summary, ""]
        out += _fields_table(cls)
        out.append("")
        nested += [n for n in _nested(cls) if n not in nested]
    for struct in nested:
        summary = (struct.__doc__ or "").strip().splitlines()[0]
        out += [f"#### struct `{struct.__name__}`", "", summary, ""]
        out += _fields_table(struct)
        out.append("")
    return "\n".join(out)


def generated_blocks() -> dict[str, str]:
    """Each generated section of SPEC.md by marker name."""
    return {
        "state-diagram": "```mermaid\n" + render_mermaid() + "```\n",
        "messages": render_messages(),
    }


def blocks_in(text: str) -> dict[str, str]:
    """The generated sections as SPEC.md currently holds them."""
    pattern = re.compile(
        r"<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n"
        r"(?P<body>.*?)<!-- END GENERATED: (?P=name) -->",
        re.S,
    )
    return {m["name"]: m["body"] for m in pattern.finditer(text)}


def update(text: str) -> str:
    """`text` (SPEC.md) with every generated section replaced by a fresh rendering."""
    for name, body in generated_blocks().items():
        begin, end = f"<!-- BEGIN GENERATED: {name} -->\n", f"<!-- END GENERATED: {name} -->"
        start = text.index(begin) + len(begin)
        text = text[:start] + body + text[text.index(end, start) :]
    return text


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write"]:
        SPEC_PATH.write_text(update(SPEC_PATH.read_text()))
    else:
        for name, body in generated_blocks().items():
            print(f"<!-- BEGIN GENERATED: {name} -->\n{body}<!-- END GENERATED: {name} -->\n")
