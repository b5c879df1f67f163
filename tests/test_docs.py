"""docs/config.md cannot drift from the code: every schema key and plugin argument is documented."""

import dataclasses
import inspect
from pathlib import Path

import pytest

from lrc.config import SECTIONS
from lrc.registry import REGISTRIES

DOC = (Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()


def section(title: str) -> str:
    start = DOC.index(f"## `{title}`")
    end = DOC.find("\n## ", start + 1)
    return DOC[start:end if end > 0 else None]


@pytest.mark.parametrize("name,schema", SECTIONS.items())
def test_every_section_key_is_documented(name, schema):
    text = section(name)
    for f in dataclasses.fields(schema):
        assert f"`{f.name}`" in text, f"docs/config.md: `{name}.{f.name}` is not documented"


@pytest.mark.parametrize("kind,name", [(k, n) for k, r in REGISTRIES.items() for n in r.names()])
def test_every_plugin_and_argument_is_documented(kind, name):
    registry = REGISTRIES[kind]
    start = DOC.index(f"### {kind}")
    kind_doc = DOC[start:DOC.find("\n### ", start + 1) if "\n### " in DOC[start + 1:] else None]
    assert f"- `{name}`" in kind_doc, f"docs/config.md '### {kind}' does not document plugin {name!r}"
    entry = kind_doc[kind_doc.index(f"- `{name}`"):]
    entry = entry[:entry.find("\n- ", 1) if "\n- " in entry[1:] else None]
    entry = entry[:entry.find("\n#") if "\n#" in entry else None]
    for arg in inspect.signature(registry.get(name)).parameters:
        if arg not in registry.provided and arg != "self":
            assert f"`{arg}" in entry, f"docs/config.md: argument {arg!r} of {kind} plugin {name!r} is not documented"
