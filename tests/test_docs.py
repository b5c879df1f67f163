"""The docs cannot drift from the code: docs/config.md documents every schema key and plugin argument, and
every `lrc` command, `make` target, link and repository path the user guide mentions is real."""

import argparse
import dataclasses
import inspect
import re
import shlex
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
    if not registry.get(name).__module__.startswith("lrc_plugins."):
        pytest.skip(f"{name!r} comes from another installed package, which documents its own plugins")
    start = DOC.index(f"### {kind}")
    kind_doc = DOC[start:DOC.find("\n### ", start + 1) if "\n### " in DOC[start + 1:] else None]
    assert f"- `{name}`" in kind_doc, f"docs/config.md '### {kind}' does not document plugin {name!r}"
    entry = kind_doc[kind_doc.index(f"- `{name}`"):]
    entry = entry[:entry.find("\n- ", 1) if "\n- " in entry[1:] else None]
    entry = entry[:entry.find("\n#") if "\n#" in entry else None]
    for arg in inspect.signature(registry.get(name)).parameters:
        if arg not in registry.provided and arg != "self":
            assert f"`{arg}" in entry, f"docs/config.md: argument {arg!r} of {kind} plugin {name!r} is not documented"


# --- the user guide cannot drift either: its commands parse (and validate) and the files it names exist ---

ROOT = Path(__file__).resolve().parents[1]
GUIDE = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*/README.md")])
# A newcomer types these as written, so their configs and overrides must also pass `lrc validate`.
VALIDATED = {ROOT / "README.md", ROOT / "docs" / "quickstart.md"}
TOP_DIRS = "lrc|plugins|experiments|tests|benchmarks|docs|examples"


def code_of(text: str) -> list[tuple[str, bool]]:
    """(line, fenced): the lines of fenced code blocks (continuation lines joined) and the inline code spans."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S))
    lines = [line for block in blocks for line in re.sub(r"\\\n\s*", " ", block).splitlines()]
    return [(line, True) for line in lines] + [(span, False) for span in spans]


def lrc_commands(doc: Path) -> list[tuple[str, bool]]:
    """Every `lrc ...` command of a doc (also `.venv/bin/lrc ...`), comments dropped, and whether it is
    in a code block (a command to run) or inline (maybe only naming a command: `lrc fit --resume`)."""
    found = []
    for line, fenced in code_of(doc.read_text()):
        line = re.split(r"\s+#", line.strip())[0].strip()
        m = re.match(r"^(?:\.venv/bin/)?lrc (.*)$", line)
        if m and not m.group(1).startswith("..."):
            found.append((m.group(1), fenced))
    return found


def argv_of(command: str) -> list[str]:
    """The README's synopsis form (`lrc fit CONFIG [--out RUN_DIR] [key=value ...]`) as a parseable argv:
    optional parts kept, `...` dropped, a one-letter metavariable (N, S, T) standing for a number."""
    command = re.sub(r"(?<![=\w])\[([^\[\]]*)\]", r" \1 ", command)  # [optional part]; not key=[1,2]
    words = shlex.split(command.replace("...", " "))
    return ["1" if re.fullmatch(r"[A-Z]", w) else w for w in words]


def subcommand(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser the leading words of argv select (`data check` -> lrc data check's), and those words."""
    from lrc.cli import parser

    node, path = parser(), []
    for word in argv:
        sub = next((a for a in node._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or word.startswith("-"):
            break
        assert word in sub.choices, f"`lrc {' '.join(path + [word])}`: no such command; choose from {list(sub.choices)}"
        node, path = sub.choices[word], path + [word]
    return node, path


COMMANDS = [(doc, cmd, fenced) for doc in GUIDE for cmd, fenced in lrc_commands(doc)]


def test_the_guide_has_commands_to_check():
    names = {doc.name for doc, _, fenced in COMMANDS if fenced}
    assert {"README.md", "quickstart.md"} <= names and len(COMMANDS) > 20


@pytest.mark.parametrize("doc,command,fenced", COMMANDS,
                         ids=[f"{d.relative_to(ROOT)}: lrc {c}" for d, c, _ in COMMANDS])
def test_every_lrc_command_in_the_docs_parses(doc, command, fenced):
    from lrc.cli import parser

    where = f"{doc.relative_to(ROOT)}: `lrc {command}`"
    argv = argv_of(command)
    node, path = subcommand(argv)
    rest = argv[len(path):]
    for word in rest:
        if word.startswith("-"):
            assert word.split("=")[0] in node._option_string_actions, f"{where}: `lrc {' '.join(path)}` has no {word}"
    if not fenced and all(w.startswith("-") for w in rest):
        return  # inline text naming a command and its options, e.g. `lrc fit --resume`
    try:
        args, extra = parser().parse_known_args(argv)
    except SystemExit:
        pytest.fail(f"{where} does not parse (see `lrc {' '.join(path)} --help`)")
    # as lrc.cli.main: what argparse leaves over must be key=value overrides of a command that takes them
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    assert not stray, f"{where}: unrecognized arguments {stray}"
    config = getattr(args, "config", None)
    # (an example package's experiment needs that package installed: tests/test_example_plugin.py validates it)
    if doc in VALIDATED and args.command in ("fit", "validate", "test") and config and "<" not in command \
            and (ROOT / config).is_file() and not config.startswith("examples/"):
        from lrc.config import load_config, validate

        validate(load_config(ROOT / config, list(args.overrides) + extra))


def test_every_make_target_in_the_docs_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    for doc in GUIDE:
        for line, _ in code_of(doc.read_text()):
            for target in re.findall(r"(?:^|\s)make ([\w-]+)", line):
                assert target in targets, f"{doc.relative_to(ROOT)}: `make {target}` is not a Makefile target"


def anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.M | re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", GUIDE, ids=[str(d.relative_to(ROOT)) for d in GUIDE])
def test_every_link_and_path_in_the_docs_exists(doc):
    text = doc.read_text()
    where = doc.relative_to(ROOT)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # http(s)://, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.exists(), f"{where}: link ({target}) points at a missing file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{where}: link ({target}): no heading with that anchor"
    for line, _ in code_of(text):
        for path in re.findall(rf"(?<![\w./<-])(?:{TOP_DIRS})/[\w./-]*", line):
            if re.search(r"[<*{]", line[line.index(path):line.index(path) + len(path) + 1]):
                continue  # a pattern (plugins/compressors/*.py) or a placeholder, not a file
            path = path.rstrip(".")  # a path ending a sentence
            # from the repository root, or (an example package's own tree) from the doc's folder
            assert (ROOT / path).exists() or (doc.parent / path).exists(), f"{where}: `{path}` does not exist"
