"""Nothing in a config, a checkpoint or a model folder can make lrc import or run code it was not told to.

Each attack carries a payload that would create a marker file; every test asserts the marker does
not exist afterwards (and, for imports, that ``sys.modules`` gained nothing).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lrc.weights.checkpoints import CheckpointError, load_state_dict_file
from lrc.config import ConfigError, load_config, validate
from lrc.registry import COMPRESSORS, PluginError

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"
PAYLOAD_MODULE = "lrc_test_payload_mod"


@pytest.fixture
def payload(tmp_path, monkeypatch) -> Path:
    """An importable module whose import (or whose ``run``) creates ``marker``; returns the marker path."""
    marker = tmp_path / "PWNED"
    pkg = tmp_path / "importable"
    pkg.mkdir()
    (pkg / f"{PAYLOAD_MODULE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        f"def run(*a, **k):\n    Path({str(marker)!r}).touch()\n")
    monkeypatch.syspath_prepend(str(pkg))
    yield marker
    sys.modules.pop(PAYLOAD_MODULE, None)


@pytest.fixture(scope="module", autouse=True)
def warm():
    """Validate a good config once, so lazily imported (legitimate) modules are loaded before snapshots."""
    validate(load_config(DEMO))


def refused(tmp_path, overrides=(), yaml: str | None = None) -> str:
    before = set(sys.modules)
    path = DEMO
    if yaml is not None:
        path = tmp_path / "attack.yaml"
        path.write_text(f"base: [{DEMO}]\n{yaml}")
    with pytest.raises((ConfigError, PluginError)) as err:
        validate(load_config(path, list(overrides)))
    new = set(sys.modules) - before
    assert not new, f"validating an attack imported {sorted(new)}"
    return str(err.value)


# -- configs name plugins, never import paths ----------------------------------------------------------
@pytest.mark.parametrize("name", ["os.system", "os:system", f"{PAYLOAD_MODULE}.run", f"{PAYLOAD_MODULE}:run",
                                  "builtins.eval", "__import__"])
def test_plugin_name_cannot_be_an_import_path(tmp_path, payload, name):
    text = refused(tmp_path, [f"model.compressor.name={name}"])
    assert f"unknown compressor plugin {name!r}" in text
    with pytest.raises(PluginError):
        COMPRESSORS.get(name)
    assert not payload.exists() and PAYLOAD_MODULE not in sys.modules


@pytest.mark.parametrize("yaml, needle", [
    (f"_target_: {PAYLOAD_MODULE}.run\n", "_target_: unknown section"),
    (f"model: {{_target_: {PAYLOAD_MODULE}.run}}\n", "model._target_: unknown key"),
    (f"model: {{compressor: {{name: tome, _target_: {PAYLOAD_MODULE}.run}}}}\n",
     "model.compressor._target_: compressors plugin 'tome' has no argument '_target_'"),
    (f"model: {{heads: {{temporal: {{_target_: {PAYLOAD_MODULE}.run}}}}}}\n", "model.heads.temporal: must be a mapping with a `name`"),
    (f"data: {{sampler: {{_target_: {PAYLOAD_MODULE}.run}}}}\n", "data.sampler._target_: samplers plugin 'uniform' has no"),
    (f"trainer: {{_target_: {PAYLOAD_MODULE}.run}}\n", "trainer._target_: not an argument of lightning.Trainer"),
    (f"model: {{llm: {{config: {{model_type: {PAYLOAD_MODULE}}}}}}}\n", "model.llm.config.model_type"),
    ("model: {llm: {config: {model_type: os.system}}}\n", "not a model type built into transformers"),
])
def test_target_keys_and_module_paths_are_refused(tmp_path, payload, yaml, needle):
    text = refused(tmp_path, yaml=yaml)
    assert needle in text, text
    assert "attack.yaml" in text
    assert not payload.exists() and PAYLOAD_MODULE not in sys.modules


def test_yaml_python_tags_are_not_constructed(tmp_path, payload):
    path = tmp_path / "tag.yaml"
    path.write_text(f"run: !!python/object/apply:{PAYLOAD_MODULE}.run []\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)
    assert not payload.exists() and PAYLOAD_MODULE not in sys.modules


# -- interpolations cannot run code ----------------------------------------------------------------
# hydra (imported by the sam2 package the mask head builds SAM2 with) registers these three on
# import; none evaluates code: `now` formats the time, `hydra` reads hydra's own run config,
# `python_version` returns the interpreter version.
HYDRA_RESOLVERS = {"now", "hydra", "python_version"}


def test_lrc_registers_no_custom_resolver():
    from omegaconf.basecontainer import BaseContainer

    import lrc.train.build  # noqa: F401 - everything a run imports before resolving
    import lrc.config  # noqa: F401
    from lrc_plugins.heads.sam2_mask import build_sam2  # pulls in sam2 and hydra

    build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", image_size=128)
    others = [n for n in BaseContainer._resolvers if not n.startswith("oc.") and n not in HYDRA_RESOLVERS]
    assert not others, others


@pytest.mark.parametrize("value", [
    "${eval:'__import__(\"os\").system(\"touch MARKER\")'}",
    "${python:__import__('os').system('touch MARKER')}",
    "${exec:open('MARKER','w')}",
    "${oc.create:MARKER}",  # a built-in resolver, but the result is not a string
])
def test_interpolations_fail_validation_cleanly(tmp_path, value, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "MARKER"
    value = value.replace("MARKER", str(marker))
    for key in ("run.name", "model.llm.config.model_type"):
        before = set(sys.modules)
        with pytest.raises(ConfigError) as err:
            validate(load_config(DEMO, [f"{key}={value}"]))
        new = {m for m in set(sys.modules) - before if not m.startswith("antlr4.")}  # OmegaConf's grammar parser
        assert not new, sorted(new)
        assert "command line" in str(err.value) or "interpolation" in str(err.value)
    assert not marker.exists()


# -- checkpoints never unpickle code -------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".bin", ".safetensors"])
def test_pickle_payload_checkpoint_is_refused(tmp_path, suffix):
    marker = tmp_path / "PWNED"
    path = tmp_path / f"weights{suffix}"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_file(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_plain_state_dict_still_loads(tmp_path):
    path = tmp_path / "ok.pt"
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)
    assert torch.equal(load_state_dict_file(path)["w"], torch.ones(2))


# -- model folders: remote code is never trusted by default ----------------------------------------
def test_trust_remote_code_defaults_to_false():
    import inspect

    from lrc.registry import LLMS

    assert inspect.signature(LLMS.get("hf_causal_lm")).parameters["trust_remote_code"].default is False


def _tiny_qwen2(folder: Path, marker: Path, model_type: str = "qwen2") -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    (folder / "evil_modeling.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from transformers import Qwen2Config, Qwen2ForCausalLM\n"
        "class EvilConfig(Qwen2Config):\n    pass\n"
        "class EvilModel(Qwen2ForCausalLM):\n    config_class = EvilConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {"AutoConfig": "evil_modeling.EvilConfig",
                          "AutoModelForCausalLM": "evil_modeling.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_auto_map_code_in_a_model_folder_is_not_run(tmp_path):
    from lrc.registry import LLMS

    marker = tmp_path / "PWNED"
    folder = _tiny_qwen2(tmp_path / "qwen", marker)
    llm = LLMS.get("hf_causal_lm")(vocab_size=64, pretrained=str(folder))
    assert type(llm.model).__name__ == "Qwen2ForCausalLM"  # the native class, not evil_modeling's
    assert not marker.exists()
    assert not any("evil_modeling" in m for m in sys.modules)


def test_auto_map_only_model_fails_clearly_without_running_code(tmp_path):
    """A model type transformers does not know can only load through its code: refused, with the fix named."""
    from lrc.registry import LLMS

    marker = tmp_path / "PWNED"
    folder = _tiny_qwen2(tmp_path / "custom", marker, model_type="evil_custom_model")
    with pytest.raises(Exception) as err:
        LLMS.get("hf_causal_lm")(vocab_size=64, pretrained=str(folder))
    assert "trust_remote_code" in str(err.value)
    assert not marker.exists()
    assert not any("evil_modeling" in m for m in sys.modules)


# -- SAM2 configs are files too: they may name SAM2's classes and nothing else ------------------------
SAM2_T = "configs/sam2.1/sam2.1_hiera_t.yaml"


def _sam2_yaml(tmp_path: Path, payload: dict, where: str = "memory_encoder") -> Path:
    """sam2.1_hiera_t.yaml with ``payload`` put into the model node at ``where``."""
    from omegaconf import OmegaConf

    from lrc_plugins.heads.sam2_mask import resolve_sam2_config

    cfg = OmegaConf.load(resolve_sam2_config(SAM2_T))
    OmegaConf.update(cfg, f"model.{where}", payload, force_add=True, merge=False)
    path = tmp_path / "sam2_attack.yaml"
    path.write_text(OmegaConf.to_yaml(cfg))
    return path


def _pickle_bomb(tmp_path: Path, marker: Path) -> Path:
    bomb = tmp_path / "weights.pt"
    torch.save({"x": _Payload(marker)}, bomb)  # unpickling it would create the marker
    return bomb


@pytest.mark.parametrize("attack", ["touch", "open", "copy", "torch_load", "nested_list", "partial", "call"])
def test_a_sam2_config_cannot_call_anything_but_sam2_classes(tmp_path, attack):
    """Before issue 15 the SAM2 YAML went to hydra's instantiate, which calls any _target_ it names (it blocks
    os.system and exec, not these): each payload below created the marker file."""
    from lrc.registry import HEADS
    from lrc_plugins.heads.sam2_mask import SAM2ConfigError, build_sam2

    marker = tmp_path / "PWNED"
    payload = {
        "touch": {"_target_": "pathlib.Path.touch", "self": str(marker)},
        "open": {"_target_": "builtins.open", "file": str(marker), "mode": "w"},
        "copy": {"_target_": "shutil.copy", "src": str(DEMO), "dst": str(marker)},
        "torch_load": {"_target_": "torch.load", "f": str(_pickle_bomb(tmp_path, marker)), "weights_only": False},
        "nested_list": {"_target_": "sam2.modeling.memory_encoder.Fuser", "num_layers": 2,
                        "layer": [{"_target_": "pathlib.Path.touch", "self": str(marker)}]},
        "partial": {"_target_": "sam2.modeling.memory_encoder.MaskDownSampler", "_partial_": True},
        "call": {"_target_": "sam2.modeling.memory_encoder.MaskDownSampler", "_args_": [str(marker)]},
    }[attack]
    path = _sam2_yaml(tmp_path, payload)
    with pytest.raises(SAM2ConfigError) as err:
        build_sam2(str(path), image_size=128)
    assert str(path) in str(err.value)
    assert ("is not one of the SAM2 classes" if attack not in ("partial", "call") else "hydra directives") in str(err.value)
    assert not marker.exists()
    # through the head plugin, as a config naming it builds it: an input error (exit 2), nothing run
    with pytest.raises(SAM2ConfigError):
        HEADS.get("sam2_mask")(hidden_size=32, config=str(path), image_size=128)
    assert not marker.exists()


def test_sam2_model_configs_packaged_with_sam2_still_build():
    from lrc_plugins.heads.sam2_mask import SAM2_CLASSES, build_sam2, packaged_config_names

    models = [n for n in packaged_config_names() if "training" not in n]
    assert len(models) == 8
    for name in models:
        text = (Path(__import__("sam2").__file__).parent / name).read_text()
        targets = {line.split("_target_:")[1].strip() for line in text.splitlines() if "_target_:" in line}
        assert targets <= SAM2_CLASSES, name
    assert type(build_sam2(SAM2_T, image_size=128)).__name__ == "SAM2VideoPredictor"


# -- model and tokenizer folders: refused with lrc's message (exit 2), never a traceback -------------
def _tiny_tokenizer(folder: Path, corpus: Path) -> Path:
    import shutil

    shutil.copytree(corpus / "tokenizer", folder)
    return folder


def test_a_tokenizer_folder_that_is_code_is_refused_before_anything_runs(tmp_path, corpus, capsys, tiny_overrides):
    from lrc.cli import main

    marker = tmp_path / "PWNED"
    folder = _tiny_tokenizer(tmp_path / "tok", corpus)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(auto_map={"AutoTokenizer": ["evil_tok.EvilTok", None]}, tokenizer_class="EvilTok")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "evil_tok.py").write_text(f"open({str(marker)!r}, 'w')\nfrom transformers import "
                                        "PreTrainedTokenizerFast\nclass EvilTok(PreTrainedTokenizerFast):\n    pass\n")
    run = tmp_path / "run"
    assert main(["fit", str(DEMO), "--out", str(run), *tiny_overrides, f"data.tokenizer={folder}"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"tokenizer folder {folder}: tokenizer_config.json has auto_map" in err
    assert "lrc never runs code from a model folder" in err
    assert not marker.exists() and not any("evil_tok" in m for m in sys.modules)
    # the failed start never reached training: the same --out is free for the next try
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_a_pickled_weights_file_in_an_llm_folder_is_refused_with_lrcs_message(tmp_path, corpus, capsys,
                                                                               tiny_overrides):
    from safetensors.torch import load_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from lrc.cli import main

    marker = tmp_path / "PWNED"
    folder = tmp_path / "llm"
    cfg = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048)
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    state = dict(load_file(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save({**state, "extra": _Payload(marker)}, folder / "pytorch_model.bin")
    args = ["fit", str(DEMO), "--out", str(tmp_path / "run"), *tiny_overrides, "model.llm.config=null",
            f"model.llm.pretrained={folder}", f"data.tokenizer={corpus / 'tokenizer'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"hf_causal_lm: refused to load the weights of {folder}" in err
    assert "weights_only set to `False`" not in err  # torch's advice to unpickle anyway is not passed on
    assert not marker.exists()


def test_a_yaml_tag_in_a_command_line_override_is_an_input_error(tmp_path, payload, capsys):
    from lrc.cli import main

    for command in (["validate", str(DEMO)], ["fit", str(DEMO), "--out", str(tmp_path / "run")]):
        assert main([*command, f"run.name=!!python/object/apply:{PAYLOAD_MODULE}.run []"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and "error:" in err
    assert not payload.exists() and PAYLOAD_MODULE not in sys.modules
