"""`lrc plugins show KIND NAME`: a plugin's arguments with types, defaults and documentation, read from its code
(the signature and the Args section of its docstring), and the contract that every built-in plugin documents
every argument there."""

import inspect
import subprocess
import sys

import pytest

from lrc.cli import main
from lrc.commands.introspect import argument_docs
from lrc.registry import REGISTRIES
from tests.conftest import ROOT


def test_plugins_show_lists_each_argument_with_type_default_and_docs(capsys):
    assert main(["plugins", "show", "compressors", "tome"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("compressors plugin 'tome': lrc_plugins.compressors.tome:ToMeCompressor (package ")
    assert "in a config: model.compressor: {name: tome, ...}" in out
    assert "  tokens_per_frame: int >= 1; default 16\n      tokens each frame keeps" in out
    assert "  restore_order: bool; default true\n" in out
    assert "set by lrc from the other components (not in YAML): in_dim" in out
    assert "  in_dim:" not in out
    assert main(["plugins", "show", "heads", "region"]) == 0  # inherits nn.Module, whose docstring is not shown
    out = capsys.readouterr().out
    assert "Base class for all neural network modules" not in out
    assert "model.heads.<label>: {name: region, ...}" in out
    assert "  activation: one of gelu, relu; default gelu\n" in out


def test_plugins_show_errors(capsys):
    assert main(["plugins", "show", "compressors", "tomee"]) == 2
    assert "unknown compressor plugin 'tomee'. Did you mean 'tome'" in capsys.readouterr().err
    assert main(["plugins", "show", "compresors", "tome"]) == 2
    assert "no plugin kind 'compresors'. Did you mean 'compressors'" in capsys.readouterr().err
    assert main(["plugins", "show", "compressor", "tome"]) == 0  # the singular is understood
    capsys.readouterr()


def test_args_sections_are_parsed_with_continuations_and_paragraphs():
    class Plugin:
        """Does a thing.

        Args:
            size: how big,
                in pixels.

                A second paragraph.
            mode (str): one of a, b
        Returns:
            nothing: not an argument
        """

        def __init__(self, size: int = 1, mode: str = "a"):
            """Arguments may be documented on __init__ too.

            Args:
                extra: documented on __init__
            """

    assert argument_docs(Plugin) == {"size": "how big, in pixels.\nA second paragraph.", "mode": "one of a, b",
                                     "extra": "documented on __init__"}


BUILT_IN = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]


@pytest.mark.parametrize("kind,name", BUILT_IN, ids=[f"{k}/{n}" for k, n in BUILT_IN])
def test_every_built_in_plugin_documents_every_argument_in_its_code(kind, name):
    registry = REGISTRIES[kind]
    cls = registry.get(name)
    if not cls.__module__.startswith("lrc_plugins."):
        pytest.skip(f"{name!r} comes from another installed package")
    params = [n for n, p in inspect.signature(cls).parameters.items()
              if n not in registry.provided and n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    docs = argument_docs(cls)
    missing = [n for n in params if not docs.get(n)]
    assert not missing, (f"{cls.__module__}:{cls.__qualname__} documents no {missing} in the Args: section of its "
                         "docstring (`lrc plugins show` prints it; docs/plugins.md)")
    stale = [n for n in docs if n not in params and n not in registry.provided]
    assert not stale, f"{cls.__qualname__}'s Args: section documents {stale}, which it does not take"


def test_plugins_show_imports_only_the_plugin():
    code = ("import sys; from lrc.cli import main; assert main(['plugins', 'show', 'compressors', 'tome']) == 0; "
            "print(sorted(m for m in ('lightning', 'transformers', 'lrc_plugins.compressors.pooling') "
            "if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("[]"), done.stderr
