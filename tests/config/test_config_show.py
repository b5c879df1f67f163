"""`lrc config show`: the resolved config with the source of every value (lrc's default, each file of the base
chain, the command line, a plugin's signature default)."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from lrc.cli import main
from lrc.config import load_config
from tests.conftest import DEMO, ROOT


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def chain(tmp_path: Path) -> Path:
    """demo tiny.yaml <- base.yaml <- exp.yaml: the base sets the compressor, the experiment changes some values."""
    write(tmp_path / "base.yaml", f"""
base: [{DEMO}]
run: {{name: base-run, seed: 3}}
model:
  compressor: {{name: tome, tokens_per_frame: 8, head_dim: 16}}
niah: {{depths: [0.0, 0.5, 1.0]}}
""")
    return write(tmp_path / "exp.yaml", """
base: [base.yaml]
run: {name: exp-run}
model:
  compressor: {clip_len: 2}
""")


def show_json(capsys, *argv) -> dict:
    assert main(["config", "show", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_every_value_names_the_layer_that_set_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = chain(tmp_path)
    shown = show_json(capsys, str(exp), "model.compressor.tokens_per_frame=4", "data.batch_size=2")
    source = {k: v["source"] for k, v in shown.items()}
    value = {k: v["value"] for k, v in shown.items()}
    assert source["run.name"] == "exp.yaml" and value["run.name"] == "exp-run"  # the later file wins
    assert source["run.seed"] == "base.yaml" and value["run.seed"] == 3
    assert source["run.root"] == "lrc default"
    assert source["model.compressor.name"] == "base.yaml"
    assert source["model.compressor.clip_len"] == "exp.yaml"  # a mapping merged key by key
    assert source["model.compressor.head_dim"] == "base.yaml"
    assert source["model.compressor.tokens_per_frame"] == "command line" and value["data.batch_size"] == 2
    assert source["niah.depths"] == "base.yaml" and value["niah.depths"] == [0.0, 0.5, 1.0]  # a list is one value
    # arguments no layer set come from the plugin's own signature
    assert source["model.compressor.restore_order"] == "default of compressors plugin tome"
    assert source["data.sampler.start"] == "default of samplers plugin uniform"
    assert source["data.sampler.num_frames"] == str(DEMO)  # outside the working directory: the whole path
    assert source["trainer.num_sanity_val_steps"] == str(ROOT / "experiments" / "base.yaml")
    assert source["data.num_workers"] == "lrc default"
    # the shown values are exactly the config a run validates to
    from lrc.config import validate
    from lrc.config.loading import leaf_keys

    cfg = validate(load_config(exp, ["model.compressor.tokens_per_frame=4", "data.batch_size=2"]))
    assert value == leaf_keys(cfg)


def test_switching_plugin_and_replacing_a_mapping(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = chain(tmp_path)
    shown = show_json(capsys, str(exp), "model.compressor.name=pooling", "model.init=null")
    # ToMe's head_dim is dropped with the switch; pooling's own arguments are its defaults
    assert "model.compressor.head_dim" not in shown
    assert shown["model.compressor.name"]["source"] == "command line"
    assert shown["model.compressor.tokens_per_frame"] == {"value": 8, "source": "base.yaml"}  # carried over
    assert shown["model.compressor.mode"]["source"] == "default of compressors plugin pooling"
    assert shown["model.init"] == {"value": None, "source": "command line"}
    assert not [k for k in shown if k.startswith("model.init.")]


def test_the_yaml_reads_back_and_names_the_layers_in_order(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = chain(tmp_path)
    assert main(["config", "show", str(exp), "run.seed=7"]) == 0
    out = capsys.readouterr().out
    assert (f"# after each value, where it was set; lowest first: lrc default, {ROOT / 'experiments/base.yaml'}, "
            f"{DEMO}, base.yaml, exp.yaml, command line") in out
    assert "  seed: 7" in out and out.splitlines()[3].rstrip().endswith("# exp.yaml")  # run.name, aligned comment
    shown = yaml.safe_load(out)  # comments aside, it is the config
    assert shown["run"] == {**shown["run"], "name": "exp-run", "seed": 7}
    assert shown["model"]["compressor"]["restore_order"] is True


def test_an_invalid_config_is_still_shown_with_its_problems(tmp_path, capsys):
    exp = chain(tmp_path)
    assert main(["config", "show", str(exp), "model.compressor.tokens_per_frame=-1"]) == 2
    captured = capsys.readouterr()
    assert "(merged, not validated)" in captured.out and "tokens_per_frame: -1" in captured.out
    assert "model.compressor.tokens_per_frame" in captured.err and "command line" in captured.err


def test_raw_imports_no_torch():
    code = ("import sys; from lrc.cli import main; "
            f"assert main(['config', 'show', {str(ROOT / 'experiments/demo/tiny.yaml')!r}, '--raw']) == 0; "
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("NO TORCH") and "(merged, not validated)" in done.stdout
