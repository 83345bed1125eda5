"""docs/events.md cannot drift from the contract: every event and command type
has a section there, every field is described in it, and its example is the
generator's output for the current structs."""
from __future__ import annotations

import importlib.util
import re
import typing
from pathlib import Path

import msgspec
import pytest

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "events.md").read_text()


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_event_examples", REPO / "scripts" / "gen_event_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
TYPES = gen.contract_types()
# Where the fields every event / every command has are described.
EVENT_COMMON = DOC.split("## The envelope", 1)[1].split("\n## ", 1)[0]
COMMAND_COMMON = DOC.split("## Commands on", 1)[1].split("\n### ", 1)[0]


def section(tag: str) -> str:
    """The text under the heading ``### `tag` `` up to the next heading."""
    match = re.search(rf"^### `{re.escape(tag)}`\n(.*?)(?=^##)", DOC, re.S | re.M)
    assert match, f"docs/events.md has no section for `{tag}`"
    return match.group(1)


def common_fields(struct_type: type) -> tuple[set[str], str]:
    """The fields ``struct_type`` shares with all its kind, and where the doc describes them."""
    base = struct_type.__mro__[1]  # _Event or _Command
    where = EVENT_COMMON if issubclass(struct_type, typing.get_args(gen.events.CallEvent)) else COMMAND_COMMON
    return {"type"} | {f.name for f in msgspec.structs.fields(base)}, where


def test_the_contract_has_types():
    assert len(TYPES) >= 14


@pytest.mark.parametrize("struct_type", TYPES, ids=lambda t: gen.tag(t))
def test_every_type_has_a_section_describing_its_fields(struct_type):
    own_section = section(gen.tag(struct_type))
    common, common_section = common_fields(struct_type)
    for field in msgspec.structs.fields(struct_type):
        where = common_section if field.name in common else own_section
        assert f"`{field.name}`" in where, f"field `{field.name}` of {gen.tag(struct_type)} is not described"


def test_there_is_an_example_of_every_type():
    examples = [*gen.example_events(), *gen.example_commands()]
    assert sorted(gen.tag(e) for e in examples) == sorted(gen.tag(t) for t in TYPES)


@pytest.mark.parametrize("record", [*gen.example_events(), *gen.example_commands()], ids=gen.tag)
def test_examples_in_the_doc_are_the_generated_ones(record):
    assert f"```json\n{gen.example_json(record)}\n```" in section(gen.tag(record)), (
        f"the example of {gen.tag(record)} is stale: run scripts/gen_event_examples.py --update docs/events.md")


def test_no_section_for_a_type_that_does_not_exist():
    documented = set(re.findall(r"^### `([a-z_.]+)`", DOC, re.M))
    assert documented == {gen.tag(t) for t in TYPES}
