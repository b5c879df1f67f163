"""Config loading (bases, overrides, plugin switching) and validation that reports every problem."""

import subprocess
import sys
from pathlib import Path

import pytest

from lrc.config import ConfigError, load_config, validate

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_demo_config_validates():
    cfg = validate(load_config(DEMO))
    assert cfg["model"]["compressor"]["name"] == "tome"
    assert cfg["distributed"]["strategy"] == "auto"  # from experiments/base.yaml


def test_bases_merge_in_order_and_overrides_win(tmp_path):
    write(tmp_path / "a.yaml", "run: {name: a, seed: 1}\ndata: {batch_size: 2}\n")
    write(tmp_path / "b.yaml", "run: {name: b}\n")
    exp = write(tmp_path / "exp" / "e.yaml", "base: [../a.yaml, ../b.yaml]\ndata: {num_workers: 0}\n")
    loaded = load_config(exp, ["data.batch_size=7"])
    cfg = loaded.to_container()
    # b's name over a's, a's seed kept, the rest lrc's defaults
    assert {k: cfg["run"][k] for k in ("name", "seed", "root", "on_nan")} == {
        "name": "b", "seed": 1, "root": "runs", "on_nan": "stop"}
    assert cfg["data"]["batch_size"] == 7
    assert loaded.source("data.batch_size") == "command line"
    assert loaded.source("run.seed").endswith("a.yaml")


def test_switching_plugin_keeps_only_accepted_arguments(tmp_path):
    exp = write(tmp_path / "e.yaml", f"base: [{DEMO}]\n")
    cfg = load_config(exp, ["model.encoder.name=internvl_vit", "model.encoder.config={hidden_size: 64}"]).to_container()
    enc = cfg["model"]["encoder"]
    assert enc["name"] == "internvl_vit"
    assert "patch_size" not in enc and "depth" not in enc  # timm-only arguments dropped
    assert enc["config"] == {"hidden_size": 64}


def test_two_mistakes_are_both_reported_with_their_file(tmp_path):
    exp = write(tmp_path / "bad.yaml", f"base: [{DEMO}]\nmodel:\n  compressor: {{name: tome, tokens_per_frme: 4}}\n"
                                       "  projector: {name: mpl}\n")
    with pytest.raises(ConfigError) as err:
        validate(load_config(exp))
    problems = err.value.problems
    assert len(problems) == 2
    assert any("tokens_per_frme" in p and "tokens_per_frame" in p and "bad.yaml" in p for p in problems)
    assert any("'mpl'" in p and "'mlp'" in p and "bad.yaml" in p for p in problems)


@pytest.mark.parametrize("override,needle", [
    ("data.batch_size=four", "expected int"),
    ("data.batch_sise=4", "did you mean 'batch_size'"),
    ("trainer.max_epoch=3", "max_epochs"),
    ("trainer.logger=false", "run.loggers"),
    ("optim.freeze=[vit]", "'vit' is not one of encoder, compressor, projector, llm, heads"),
    ("model.compressor.in_dim=3", "set by lrc"),
    ("data.sampler.num_frames=6", "not a multiple of model.compressor.clip_len=4"),
    ("model.llm.vocab_size=10", "set by lrc"),
    ("modle.x=1", "unknown section"),
    ("model.compressor=null", "must be a mapping with a `name`"),
])
def test_each_kind_of_mistake_is_named(override, needle):
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, [override]))
    text = str(err.value)
    assert needle.lower() in text.lower(), text
    assert "command line" in text


def test_learning_rates_name_known_components():
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, ["optim.lr.vit=0.1"]))
    assert "optim.lr.vit: 'vit' is not one of encoder, compressor, projector, llm, heads" in str(err.value)
    with pytest.raises(ConfigError, match="optim.lr: expected mapping"):
        validate(load_config(DEMO, ["optim.lr=null"]))


def test_missing_base_and_bad_yaml_are_clear(tmp_path):
    exp = write(tmp_path / "e.yaml", "base: [nope.yaml]\n")
    with pytest.raises(ConfigError, match="nope.yaml does not exist"):
        load_config(exp)
    bad = write(tmp_path / "bad.yaml", "data: {batch_size: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    loop = write(tmp_path / "loop.yaml", "base: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(loop)


def test_config_cannot_name_an_import_path():
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, ["model.compressor.name=os.system"]))
    assert "unknown compressor plugin 'os.system'" in str(err.value)


def test_cli_validate_exits_2_and_prints_all(tmp_path):
    exp = write(tmp_path / "bad.yaml", f"base: [{DEMO}]\ndata: {{batch_sise: 4}}\nrun: {{seeed: 1}}\n")
    proc = subprocess.run([sys.executable, "-m", "lrc.cli", "validate", str(exp)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "batch_sise" in proc.stderr and "seeed" in proc.stderr and "2 config problem(s)" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "lrc.cli", "validate", str(DEMO)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
