"""Architecture rules that hold for every module of lrc/ and plugins/ (the package lrc_plugins).

* No module uses another module's private names: no ``from lrc.x import _name``, no ``x._name`` where
  ``x`` came from another lrc or lrc_plugins module. What two modules share is public, documented and
  lives where both may import it (e.g. lrc/data/sampling.py for samplers, lrc/ops.py, lrc/protocols.py).
* No lrc module imports lrc_plugins: lrc reaches plugins through its registries only (docs/plugins.md).

Only lrc/ and plugins/ are scanned: a test may import the privates of the module it tests.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"lrc": "lrc", "plugins": "lrc_plugins"}  # folder -> import name


def module_name(path: Path) -> tuple[str, bool]:
    """``lrc/data/sampling.py`` -> ``("lrc.data.sampling", False)``; a package's ``__init__`` -> its name, True."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts[0] = PACKAGES[parts[0]]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def is_ours(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in PACKAGES.values())


def imported_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def private_uses(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, what)`` for every use of another lrc/lrc_plugins module's private name in ``source``."""
    tree = ast.parse(source)
    found = []
    bound: dict[str, tuple[str, str]] = {}  # local name -> (its module, what it is: "lrc.registry.HEADS")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            origin = imported_from(node, module, is_package)
            if not is_ours(origin):
                continue
            for alias in node.names:
                if is_private(alias.name) and origin != module:
                    found.append((node.lineno, f"from {origin} import {alias.name}"))
                bound[alias.asname or alias.name] = (origin, f"{origin}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if is_ours(alias.name):
                    # `import lrc.data.video` binds `lrc`; `import lrc.data.video as v` binds `v` to the module
                    what = alias.name if alias.asname else alias.name.split(".")[0]
                    bound[alias.asname or what] = (what, what)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, value = [node.attr], node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not (isinstance(value, ast.Name) and value.id in bound) or not is_private(node.attr):
            continue
        origin, what = bound[value.id]
        target = ".".join([what, *reversed(chain[1:])])  # whose private attribute this is
        if origin != module and target != module:
            found.append((node.lineno, f"{target}.{node.attr}"))
    return found


def python_files() -> list[Path]:
    return sorted(p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py"))


def test_the_scan_sees_every_module():
    files = python_files()
    names = {module_name(p)[0] for p in files}
    assert {"lrc.protocols", "lrc.data.sampling", "lrc_plugins.samplers.uniform", "lrc_plugins.heads.region"} <= names
    assert len(files) > 40


@pytest.mark.parametrize("source,found", [
    ("from lrc_plugins.heads.region import RegionHead, _mlp", ["from lrc_plugins.heads.region import _mlp"]),
    ("from ..samplers.uniform import _is_real", ["from lrc_plugins.samplers.uniform import _is_real"]),
    ("from . import _helpers", ["from lrc_plugins.heads import _helpers"]),
    ("import lrc.train.run\nlrc.train.run._fit(1)", ["lrc.train.run._fit"]),
    ("import lrc.train.run as r\nr._fit(1)", ["lrc.train.run._fit"]),
    ("from lrc.train import run\nrun._fit(1)", ["lrc.train.run._fit"]),
    ("from lrc.registry import HEADS\nHEADS._table.clear()", ["lrc.registry.HEADS._table"]),
    # allowed: public names, dunders, other packages' privates, the module's own names
    ("from lrc import __version__\nfrom lrc.ops import is_int\nimport torch\ntorch._C\nx._y", []),
    ("from lrc_plugins.heads.cgdetr import _private_to_me", []),
    ("import lrc_plugins.heads.cgdetr\nlrc_plugins.heads.cgdetr._own(1)", []),
])
def test_the_scan_finds_private_uses(source, found):
    assert [what for _, what in private_uses(source, "lrc_plugins.heads.cgdetr")] == found


def test_no_module_uses_another_modules_private_names():
    problems = []
    for path in python_files():
        module, is_package = module_name(path)
        for line, what in private_uses(path.read_text(encoding="utf-8"), module, is_package):
            problems.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not problems, (
        "private names used across modules (make the helper public where both modules may import it, "
        "e.g. lrc/ops.py, lrc/protocols.py or lrc/data/sampling.py, or keep it inside its module):\n"
        + "\n".join(problems))


def test_lrc_never_imports_lrc_plugins():
    problems = []
    for path in sorted((ROOT / "lrc").rglob("*.py")):
        module, is_package = module_name(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [imported_from(node, module, is_package)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            problems += [f"{path.relative_to(ROOT)}:{node.lineno}: imports {n}" for n in names
                         if n == "lrc_plugins" or n.startswith("lrc_plugins.")]
    assert not problems, "lrc reaches plugins through its registries (lrc/registry.py), never by import:\n" + \
        "\n".join(problems)
