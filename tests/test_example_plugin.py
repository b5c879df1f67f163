"""The worked example plugin package (examples/lrc-example-compressor) installs, registers and runs from YAML.

The package is pip-installed into a temporary folder (offline: no dependencies, no build isolation, the
venv's setuptools) and used by subprocesses that put that folder on PYTHONPATH, exactly as an installed
third-party package is seen: through its entry point in the ``lrc.compressors`` group. The repo's .venv
is never modified, and nothing else in the suite needs the example.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lrc-example-compressor"
EXPERIMENT = EXAMPLE / "experiment.yaml"


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """Environment for subprocesses that see the installed example package."""
    tmp = tmp_path_factory.mktemp("example_plugin")
    # Build from a copy: pip's setuptools build writes build/ and *.egg-info next to the sources.
    src = shutil.copytree(EXAMPLE, tmp / "src", ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (site / "lrc_example_compressor").is_dir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_installed_plugin_is_listed_and_its_experiment_validates(plugin_env):
    listed = run(["-m", "lrc.cli", "plugins", "list", "--json"], plugin_env)
    assert listed.returncode == 0, listed.stderr
    assert "keyframe_delta" in json.loads(listed.stdout)["compressors"]

    ok = run(["-m", "lrc.cli", "validate", str(EXPERIMENT)], plugin_env)
    assert ok.returncode == 0 and ok.stdout.strip().endswith("OK"), ok.stdout + ok.stderr

    # the plugin's own check_args runs in validate, next to lrc's checks, all reported at once
    bad = run(["-m", "lrc.cli", "validate", str(EXPERIMENT), "model.compressor.emit=diff",
               "model.compressor.tokens_per_frame=0"], plugin_env)
    assert bad.returncode == 2
    assert "command line: model.compressor.emit: 'diff' is not one of token, residual" in bad.stderr
    assert "command line: model.compressor.tokens_per_frame: must be at least 1, got 0" in bad.stderr


@pytest.mark.skipif(importlib.util.find_spec("lrc_example_compressor") is not None,
                    reason="the example package is installed in this environment")
def test_without_the_package_the_name_is_unknown_and_the_error_says_to_install_it():
    done = run(["-m", "lrc.cli", "validate", str(EXPERIMENT)])
    assert done.returncode == 2
    assert "model.compressor.name: unknown compressor plugin 'keyframe_delta'" in done.stderr
    assert "installed in this Python environment" in done.stderr and "'lrc.compressors'" in done.stderr


def test_lrc_contract_tests_and_the_package_tests_pass_on_the_installed_plugin(plugin_env):
    """lrc's contract tests are parametrised over the registry, so the installed plugin joins them."""
    done = run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "keyframe_delta",
                "tests/plugins/test_contracts.py", str(EXAMPLE / "tests")], plugin_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # 7 compressor contract cases (3 shapes, gradients, clip_len refusal, rank/width refusal, clip-locality) + the
    # package's 5 tests
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed.group(1)) >= 11, done.stdout[-2000:]


@pytest.mark.slow
def test_fit_with_the_installed_plugin_from_yaml(plugin_env, tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    done = run(["-m", "lrc.cli", "fit", str(EXPERIMENT), "--out", str(run_dir), *tiny_overrides], plugin_env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/steps"] > 0 and metrics["val/mcq_count"] > 0
    assert metrics["model/visual_tokens_per_video"] == 4 * 4  # 4 frames × tokens_per_frame 4 (tiny_overrides)
    plugin = yaml.safe_load((run_dir / "config.yaml").read_text())["_lrc"]["plugins"]["model.compressor"]
    assert plugin == {"name": "keyframe_delta", "package": "lrc-example-compressor==0.1.0",
                      "origin": "lrc_example_compressor.keyframe_delta:KeyframeDeltaCompressor"}
