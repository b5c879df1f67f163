"""The distribution as a user installs it: its name, its declared dependencies, and that lrc works where the
optional ones (decord, sam2) are not installed.

The base install must compile nothing and run on every platform PyTorch does: decord has no wheel for aarch64 or
macOS on Apple silicon and SAM2 is a source distribution, so both are extras (pyproject.toml). "Not installed" is
simulated in a fresh interpreter by ``sys.modules[name] = None``, which makes ``import name`` fail as it does when
the package is absent and ``importlib.util.find_spec(name)`` answer None.
"""

import json
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata

import pytest

from tests.conftest import DEMO, ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL = ("decord", "sam2")


def requirement_name(requirement: str) -> str:
    for stop in "<>=!~[ ;":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def test_the_distribution_is_lrc_video_and_its_base_needs_neither_decord_nor_sam2():
    project = PYPROJECT["project"]
    # `lrc` on PyPI is an unrelated project; a plugin package depending on "lrc" would install that one
    assert project["name"] == "lrc-video"
    base = {requirement_name(r) for r in project["dependencies"]}
    assert not base & set(OPTIONAL), base & set(OPTIONAL)
    assert "av" in base  # PyAV, the video reader every platform has
    extras = {name: {requirement_name(r) for r in reqs} for name, reqs in project["optional-dependencies"].items()}
    assert "decord" in extras["decord"] and "sam2" in extras["tpo"] and "mlflow" in extras["mlflow"]
    assert project["scripts"]["lrc"] == "lrc.cli:main"
    # the installed metadata is this project's, and `import lrc` belongs to it
    assert "lrc-video" in metadata.packages_distributions()["lrc"]
    from lrc import __version__

    assert metadata.version("lrc-video") == __version__


def test_the_worked_example_plugin_depends_on_lrc_video():
    example = tomllib.loads((ROOT / "examples" / "lrc-example-compressor" / "pyproject.toml").read_text())
    assert "lrc-video" in {requirement_name(r) for r in example["project"]["dependencies"]}


def test_lrc_works_without_decord_and_sam2():
    """--version, plugins list, validate of a config with the SAM2 head (the missing extra named, exit 2), and
    building that head (a MissingDependencyError naming the head and the extra), with both packages absent."""
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        for name in {OPTIONAL!r}:
            sys.modules[name] = None  # absent: `import {{name}}` raises ModuleNotFoundError, find_spec gives None
        from lrc.cli import main
        out = {{}}
        for key, argv in (("version", ["--version"]), ("plugins", ["plugins", "list", "--json"]),
                          ("validate", ["validate", {str(DEMO)!r}, "model.heads.mask.name=sam2_mask"])):
            stdout, stderr = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code
            out[key] = [code, stdout.getvalue(), stderr.getvalue()]
        from lrc.errors import LrcError
        from lrc.registry import HEADS
        from lrc.train.build import instantiate
        try:
            instantiate(HEADS, {{"name": "sam2_mask", "image_size": 128, "adapter_hidden": 32}}, hidden_size=64)
            out["build"] = "built"
        except LrcError as exc:
            out["build"] = [type(exc).__name__, str(exc)]
        out["imported"] = sorted(m for m in sys.modules if m.split(".")[0] in {OPTIONAL!r} and sys.modules[m])
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    code, stdout, _ = out["version"]
    assert code == 0 and stdout.startswith("lrc 0.") and "lrc-video" in stdout
    code, stdout, _ = out["plugins"]
    assert code == 0 and "sam2_mask" in json.loads(stdout)["heads"]  # listing never imports a plugin
    code, _, stderr = out["validate"]
    assert code == 2
    assert "model.heads.mask.name: heads plugin 'sam2_mask' (TPO's SAM2 mask head) needs the Python package 'sam2'" \
        in stderr and 'pip install "lrc-video[tpo]"' in stderr
    kind, message = out["build"]
    assert kind == "MissingDependencyError"
    assert "sam2_mask" in message and 'pip install "lrc-video[tpo]"' in message
    assert out["imported"] == []


def test_version_flag(capsys):
    from lrc.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    from lrc import __version__

    assert capsys.readouterr().out.strip().startswith(f"lrc {__version__} (package lrc-video")
