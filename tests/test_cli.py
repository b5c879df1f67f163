"""The command line as a user meets it: start-up cost, and the one error handler (lrc/cli.py, lrc/errors.py).

Each case runs the real command in a fresh interpreter, so what it imports and what it prints are what a
user would see, not what earlier tests left in this process.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import DEMO, ROOT, tiny_override_list


def run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def modules_after(argv: list[str]) -> set[str]:
    """The modules loaded once ``lrc ARGV`` has run (printed by the child, one per line)."""
    done = run(textwrap.dedent(f"""
        import sys
        from lrc.cli import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        print("\\n".join(sorted(sys.modules)), file=sys.stderr)
    """))
    return set(done.stderr.split())


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["plugins", "list"]])
def test_help_and_listing_import_no_torch(argv):
    loaded = modules_after(argv)
    assert "lrc.cli" in loaded  # the child ran
    heavy = {"torch", "lightning", "transformers", "omegaconf", "numpy"} & loaded
    assert not heavy, f"`lrc {' '.join(argv)}` imported {sorted(heavy)}"


def fake_distribution(site: Path, error: str) -> None:
    """An installed third-party package (a dist-info with an entry point, as pip leaves it) whose compressor
    fails in its constructor with ``error``."""
    (site / "broken_plugin.py").write_text(textwrap.dedent(f"""
        from torch import nn

        class BrokenCompressor(nn.Module):
            def __init__(self, in_dim: int, frame_tokens: int, tokens_per_frame: int = 16, clip_len: int = 4):
                super().__init__()
                raise {error}
    """))
    info = site / "lrc_broken_plugin-0.3.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lrc-broken-plugin\nVersion: 0.3.1\n")
    (info / "entry_points.txt").write_text("[lrc.compressors]\nbroken = broken_plugin:BrokenCompressor\n")
    (info / "top_level.txt").write_text("broken_plugin\n")


def test_a_third_party_plugin_failing_in_its_constructor_is_named_with_its_package(corpus, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(site, "KeyError('no such table')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    argv = ["fit", str(DEMO), *tiny_override_list(corpus, tmp_path), "model.compressor.name=broken"]
    done = run(f"import sys; from lrc.cli import main; sys.exit(main({argv!r}))", env)
    assert done.returncode == 2, done.stderr
    assert "compressors plugin 'broken' (broken_plugin:BrokenCompressor, package lrc-broken-plugin 0.3.1) could " \
           "not be built: KeyError: 'no such table'" in done.stderr
    assert "Traceback" not in done.stderr and "--debug" in done.stderr

    # --debug (or LRC_DEBUG=1) shows where it failed, for a report to the plugin's authors
    for debug_argv, extra_env in (([*argv, "--debug"], {}), (argv, {"LRC_DEBUG": "1"})):
        done = run(f"import sys; from lrc.cli import main; sys.exit(main({debug_argv!r}))", {**env, **extra_env})
        assert done.returncode == 2
        assert "Traceback" in done.stderr and "broken_plugin.py" in done.stderr


def test_a_bug_keeps_its_traceback_and_exit_code_1(corpus, tmp_path):
    """Not every exception is the user's to fix: a plain error outside a plugin's constructor is a bug."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = run(textwrap.dedent("""
        import sys
        import lrc.cli
        def broken(args):
            raise RuntimeError("a bug")
        lrc.cli._plugins_list = broken
        sys.exit(lrc.cli.main(["plugins", "list"]))
    """), env)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "RuntimeError: a bug" in done.stderr
