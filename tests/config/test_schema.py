"""One typed schema (lrc/config/schema.py) and one checker (lrc.constraints.check_value) behind every config
value: sections at any depth, plugin arguments (their constructors' annotations), trainer.* (Lightning's own
annotations). Each value below once passed `lrc validate` and failed later, or silently changed the model."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import subprocess
import sys

import pytest
import yaml

from lrc.cli import main
from lrc.config import PLUGIN_SLOTS, SECTIONS, ConfigError, defaults, load_config, validate
from lrc.config.schema import DataConfig, InitConfig, LossConfig, PackingConfig, TokenDropout
from lrc.registry import COMPRESSORS, ENCODERS, LLMS, PROJECTORS, SAMPLERS
from tests.config.test_config import DEMO, ROOT


def validate_cli(capsys, *overrides: str) -> tuple[int, str]:
    code = main(["validate", str(DEMO), *overrides])
    return code, capsys.readouterr().err


# --- values that used to pass -------------------------------------------------------------------
@pytest.mark.parametrize("overrides, key, what", [
    (["model.compressor.tokens_per_frame=0"], "model.compressor.tokens_per_frame", "must be at least 1, got 0"),
    (["model.encoder.patch_size=0"], "model.encoder.patch_size", "must be at least 1, got 0"),
    (["data.sampler.num_frames=0"], "data.sampler.num_frames", "must be at least 1, got 0"),
    (["model.encoder.embed_dim=-8"], "model.encoder.embed_dim", "must be at least 1, got -8"),
    (["model.compressor.clip_len=-4"], "model.compressor.clip_len", "must be at least 1, got -4"),
    (["model.llm.config.hidden_size=-64"], "model.llm.config.hidden_size", "must be at least 1, got -64"),
    (["model.llm.config.hidden_sise=64"], "model.llm.config.hidden_sise", "Did you mean 'hidden_size'"),
    (["optim.lr.llm=-1"], "optim.lr.llm", "must be at least 0, got -1"),
    (["optim.lr.llm=.nan"], "optim.lr.llm", "must be a finite number, got nan"),
    (["optim.optimizer.betas=[0.9,1.5]"], "optim.optimizer.betas", "item 1: must be in [0, 1), got 1.5"),
    (["optim.betas=[0.9,0.99]"], "optim.betas", "moved to optim.optimizer.betas"),
    (["trainer.gradient_clip_val=.nan"], "trainer.gradient_clip_val", "must be a finite number, got nan"),
    (["optim.min_lr_ratio=-5"], "optim.min_lr_ratio", "must be in [0, 1], got -5"),
    (["trainer.max_epochs=two"], "trainer.max_epochs", "expected int >= -1 or null, got 'two'"),
    (["model.compressor.name=pooling", "model.compressor.mode=median"], "model.compressor.mode",
     "'median' is not one of avg, max"),
    (["data.batch_size=true"], "data.batch_size", "expected int >= 1, got True"),
    (["data.read_timeout_s=.inf"], "data.read_timeout_s", "must be a finite number, got inf"),
    (["model.heads.temporal={name: cgdetr, dropout: 1.0}"], "model.heads.temporal.dropout",
     "must be in [0, 1), got 1.0"),
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches", "must be at least 1, got 0"),
    (["distributed.timeout_s=0"], "distributed.timeout_s", "must be greater than 0, got 0"),
])
def test_lrc_validate_refuses_the_value_and_names_the_key(capsys, overrides, key, what):
    code, err = validate_cli(capsys, *overrides)
    assert code == 2, err
    assert f"command line: {key}: " in err and what in err, err


def test_all_problems_are_reported_at_once(capsys):
    code, err = validate_cli(capsys, "model.compressor.tokens_per_frame=0", "optim.min_lr_ratio=-5",
                             "trainer.max_epochs=two", "data.packing.max_tokns=4")
    assert code == 2 and "4 config problem(s)" in err, err


# --- unknown keys at any depth, with the close matches ------------------------------------------------
@pytest.mark.parametrize("override, key, close", [
    ("data.packing.max_tokns=4096", "data.packing.max_tokns", "max_tokens"),
    ("model.init.layot=lrc", "model.init.layot", "layout"),
    ("model.token_dropout.ratio=[0.5]", "model.token_dropout.ratio", "ratios"),
    ("model.heads.temporal={name: cgdetr, num_querys: 4}", "model.heads.temporal.num_querys", "num_queries"),
    ("model.llm.config.num_hidden_layer=2", "model.llm.config.num_hidden_layer", "num_hidden_layers"),
    ("optim.lr.projecter=0.1", "optim.lr.projecter", "projector"),
])
def test_nested_unknown_keys_say_what_was_meant(override, key, close):
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, [override]))
    assert any(p.startswith(f"command line: {key}: ") and repr(close) in p for p in err.value.problems), err.value


# --- choices are listed ----------------------------------------------------------------------------
@pytest.mark.parametrize("override, listed", [
    ("run.on_nan=ignore", "'ignore' is not one of stop, skip"),
    ("distributed.strategy=fdsp", "is not one of auto, ddp, fsdp, deepspeed. Did you mean 'fsdp'"),
    ("distributed.zero_stage=4", "4 is not one of 1, 2, 3"),
    ("model.token_dropout.mode=random", "is not one of uniform, attention, uniform_then_attention"),
    ("model.init.layout=hf", "is not one of auto, lrc, internvl_hf, internvl_remote"),
    ("data.synth_tasks=[mcq,needl]", "item 1: 'needl' is not one of mcq, temporal, region, mask, preference, "
                                     "needle. Did you mean 'needle'"),
    ("model.llm.attn_implementation=flash", "is not one of eager, sdpa, flash_attention_2"),
    ("data.sampler.name=uniform", None),  # a valid choice stays valid
])
def test_literal_errors_list_the_choices(override, listed):
    if listed is None:
        validate(load_config(DEMO, [override]))
        return
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, [override]))
    assert listed in str(err.value), err.value


def test_trainer_is_checked_against_lightnings_annotations_leniently():
    # what the annotations allow (strings for timedelta and profiler, Literal 'warn') stays valid
    validate(load_config(DEMO, ["trainer.max_time=00:00:10:00", "trainer.profiler=simple",
                                "trainer.deterministic=warn", "trainer.val_check_interval=0.5",
                                "trainer.gradient_clip_val=1", "trainer.max_epochs=-1"]))
    with pytest.raises(ConfigError) as err:
        validate(load_config(DEMO, ["trainer.deterministic=maybe", "trainer.precision=16", "trainer.logger=false"]))
    text = str(err.value)
    assert "trainer.deterministic: 'maybe' is not one of warn" in text
    assert "trainer.precision: set distributed.precision instead" in text and "trainer.logger: name loggers in run.loggers" in text


# --- defaults: written once, and written out ------------------------------------------------------
def test_validated_config_has_every_plugin_default_but_not_the_builders_values():
    from lrc.train.build import resolve_implied

    cfg = validate(load_config(DEMO))
    assert cfg["model"]["prompt"] is None  # null: what model.init implies, decided when the model is built
    cfg = resolve_implied(cfg)
    for slot, registry in PLUGIN_SLOTS.items():
        node = cfg
        for part in slot.split("."):
            node = node[part]
        params = inspect.signature(registry.get(node["name"])).parameters
        for name, p in params.items():
            if name in registry.provided:
                assert name not in node, f"{slot}.{name} is the builder's"
            elif p.default is not p.empty:
                assert name in node, f"{slot}.{name} missing from the resolved config"
    assert cfg["model"]["compressor"]["restore_order"] is True  # tome's default, not set by the demo
    assert cfg["model"]["encoder"]["mean"] == [0.485, 0.456, 0.406]  # tuples written as YAML lists
    heads = validate(load_config(ROOT / "experiments" / "demo" / "tpo.yaml"))["model"]["heads"]
    assert all("dropout" in node or node["name"] != "cgdetr" for node in heads.values())
    assert all("hidden_size" not in node for node in heads.values())


def test_run_config_yaml_holds_the_plugin_defaults(tmp_path):
    from lrc.train.run import write_resolved_config

    loaded = load_config(DEMO)
    write_resolved_config(tmp_path, validate(loaded), loaded)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert saved["model"]["compressor"]["restore_order"] is True and "in_dim" not in saved["model"]["compressor"]
    assert saved["data"]["sampler"] == {"name": "uniform", "num_frames": 4, "start": None, "end": None, "exact": True}
    # the saved config is an experiment (its provenance block _lrc is skipped) that validates to itself
    assert "plugins" in saved["_lrc"]
    again = validate(load_config(tmp_path / "config.yaml"))
    assert again["model"] == validate(loaded)["model"]


def test_missing_section_keys_are_filled_from_the_schema():
    from lrc.config import LoadedConfig
    from omegaconf import OmegaConf

    cfg = validate(load_config(DEMO))
    del cfg["data"]["packing"]["lookahead"], cfg["model"]["init"]["layout"]
    filled = validate(LoadedConfig(OmegaConf.create(cfg), None, {}))
    assert filled["data"]["packing"]["lookahead"] == PackingConfig.lookahead
    assert filled["model"]["init"]["layout"] == InitConfig.layout


def test_defaults_come_from_the_schema():
    assert defaults()["data"] == dataclasses.asdict(DataConfig())
    assert set(defaults()) == set(SECTIONS) | {"trainer"}
    from lrc.config.schema import LISTED_SLOTS
    from lrc.registry import CALLBACKS, LOGGERS, OPTIMIZERS, PROMPTS

    assert PLUGIN_SLOTS == {"data.sampler": SAMPLERS, "model.encoder": ENCODERS, "model.compressor": COMPRESSORS,
                            "model.projector": PROJECTORS, "model.llm": LLMS, "model.prompt": PROMPTS,
                            "optim.optimizer": OPTIMIZERS}
    assert LISTED_SLOTS == {"run.loggers": LOGGERS, "run.callbacks": CALLBACKS}
    # the modules that used to carry their own copy now read the schema
    from lrc.cli import parser
    from lrc.data.packing import plan_packs
    from lrc.data.video import VideoFile
    from lrc.model.token_dropout import TokenDropout as ModelTokenDropout

    check = next(a for a in parser()._subparsers._group_actions[0].choices["data"]._subparsers._group_actions[0]
                 .choices["check"]._actions if a.dest == "timeout_s")
    assert check.default == DataConfig.read_timeout_s
    assert inspect.signature(VideoFile).parameters["timeout_s"].default == DataConfig.read_timeout_s
    assert inspect.signature(plan_packs).parameters["lookahead"].default == PackingConfig.lookahead
    assert ModelTokenDropout is TokenDropout
    assert LossConfig().dpo_reference == "frozen_copy"


# --- the layer: lrc.config imports nothing above it ---------------------------------------------------
BOTTOM = {"lrc", "lrc.errors", "lrc.registry", "lrc.constraints", "lrc.protocols", "lrc.ops", "lrc.memory",
          "lrc.files"}


def test_lrc_config_imports_only_itself_and_the_bottom_layer():
    for path in sorted((ROOT / "lrc" / "config").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                if name.startswith("lrc.") or name == "lrc":
                    assert name.startswith("lrc.config") or name in BOTTOM, f"{path.name} imports {name}"
    code = "import sys, lrc.config; print(sorted(m for m in sys.modules if m.split('.')[0] in ('lrc', 'torch')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    modules = set(eval(loaded))  # noqa: S307 - our own printout of a list of module names
    assert not {m for m in modules if m.startswith("torch")}, "lrc.config imports torch"
    assert modules <= BOTTOM | {m for m in modules if m.startswith("lrc.config")}, modules


def test_token_dropout_schedule_is_one_dataclass():
    schedule = TokenDropout(enabled=True, layers=[2, 1], ratios=[0.5, 0.75])
    assert len(schedule.problems()) == 2  # layers must increase, ratios must not
    assert TokenDropout(layers=[1, 2], ratios=[0.5, 0.25]).problems(num_layers=2) == [
        "layers [1, 2] must be < the LLM's 2 decoder layers"]


def test_the_builder_checks_plugin_arguments_with_the_same_checker():
    import torch

    from lrc.train.build import instantiate

    built = []
    original = torch.nn.Module.__init__
    torch.nn.Module.__init__ = lambda self, *a, **k: (built.append(type(self).__name__), original(self, *a, **k))[1]
    try:
        with pytest.raises(ConfigError, match=r"compressors plugin 'tome': tokens_per_frame: must be at least 1, got 0"):
            instantiate(COMPRESSORS, {"name": "tome", "tokens_per_frame": 0}, in_dim=64)
    finally:
        torch.nn.Module.__init__ = original
    assert built == []  # refused before the constructor ran


def test_examples_and_docs_still_validate():
    for path in [DEMO, ROOT / "experiments" / "demo" / "tpo.yaml"]:
        assert main(["validate", str(path)]) == 0


def test_cli_exit_code_for_a_bad_value_in_a_file(tmp_path, capsys):
    exp = tmp_path / "e.yaml"
    exp.write_text(f"base: [{DEMO}]\noptim: {{optimizer: {{betas: [0.9, 1.5]}}}}\nmodel: {{encoder: {{patch_size: 0}}}}\n")
    assert main(["validate", str(exp)]) == 2
    err = capsys.readouterr().err
    assert f"{exp.resolve()}: optim.optimizer.betas: item 1: must be in [0, 1), got 1.5" in err
    assert f"{exp.resolve()}: model.encoder.patch_size: must be at least 1, got 0" in err

