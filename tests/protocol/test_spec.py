"""SPEC.md holds the state diagram and message tables exactly as the code renders them."""

from __future__ import annotations

from protocol._spec import SPEC_PATH, blocks_in, generated_blocks
from protocol._state import TRANSITIONS, Input, State, render_mermaid


def test_spec_state_diagram_matches_the_transition_table() -> None:
    spec = blocks_in(SPEC_PATH.read_text())
    assert spec["state-diagram"] == "```mermaid\n" + render_mermaid() + "```\n", (
        "SPEC.md is stale: run `python -m protocol._spec --write`"
    )


def test_spec_message_tables_match_the_code() -> None:
    assert blocks_in(SPEC_PATH.read_text())["messages"] == generated_blocks()["messages"], (
        "SPEC.md is stale: run `python -m protocol._spec --write`"
    )


def test_every_transition_is_drawn() -> None:
    diagram = render_mermaid()
    for (source, event), target in TRANSITIONS.items():
        assert f"{source.name} --> {target.name}: {event.value}" in diagram


def test_every_state_is_reachable_and_ends_are_final() -> None:
    reached, frontier = {State.START}, [State.START]
    while frontier:
        state = frontier.pop()
        for (source, _), target in TRANSITIONS.items():
            if source is state and target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(State)
    assert not any(source in (State.CLOSED, State.FAILED) for source, _ in TRANSITIONS)
    assert all((s, Input.PROTOCOL_ERROR) in TRANSITIONS for s in State
               if s not in (State.CLOSED, State.FAILED))
