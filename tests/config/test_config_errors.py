"""Config mistakes of every kind are reported together, in ONE ConfigError, before anything is built.

Each problem names the file (or "command line") that set the key and the dotted key itself, so a
user fixes a config in one pass (docs/config.md).
"""

from __future__ import annotations


import pytest
import torch

from lrc.config import ConfigError, load_config, validate
from lrc.registry import SAMPLERS
from tests.config.test_config import DEMO, write


def problems_of(loaded) -> list[str]:
    with pytest.raises(ConfigError) as err:
        validate(loaded)
    assert f"{len(err.value.problems)} config problem(s)" in str(err.value)
    return err.value.problems


def one(problems: list[str], source: str, key: str, what: str = "") -> str:
    """The single problem that names ``source`` and ``key`` (and ``what``)."""
    found = [p for p in problems if p.startswith(f"{source}: {key}") or (p.startswith(source) and f": {key}" in p)]
    found = [p for p in found if what.lower() in p.lower()]
    assert found, f"no problem for {source}: {key} ({what}) in:\n" + "\n".join(problems)
    return found[0]


@pytest.fixture
def no_modules_built(monkeypatch):
    """Fails the test if any torch module is constructed (validation must not build a model)."""
    built: list[str] = []
    original = torch.nn.Module.__init__

    def spy(self, *args, **kwargs):
        built.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__init__", spy)
    yield built
    assert not built, f"validation built modules: {built}"


@pytest.fixture
def sampler_with_required_argument():
    """A third-party sampler whose signature has a required argument."""

    class WindowSampler:
        def __init__(self, window: int, clip_len: int = 4):
            self.window = window

    SAMPLERS.add("window_for_test", WindowSampler)
    yield "window_for_test"
    SAMPLERS._table.pop("window_for_test", None)


def test_every_kind_of_mistake_in_one_error(tmp_path, no_modules_built, sampler_with_required_argument):
    base = write(tmp_path / "base.yaml", f"base: [{DEMO}]\nrun: {{nmae: x}}\ntrainer: {{max_epoch: 3}}\n")
    exp = write(tmp_path / "exp" / "e.yaml", """\
base: [../base.yaml]
data:
  batch_sise: 4                 # unknown key (typo)
  eval_batch_size: 0            # < 1
  max_length: 0                 # < 1
  tasks: [mcq, temproal]        # unknown task
  sampler: {name: window_for_test}   # missing required argument `window`
model:
  encoder: {name: timm_vit, depth: two}          # wrong type
  compressor: {name: tome, tokens_per_frme: 4}   # unknown plugin argument
  projector: {name: mpl}                         # unknown plugin name
  token_dropout: {enabled: true, layers: [1, 8], ratios: [0.5, 0.25], mood: x}  # unknown nested key
  heads:
    temporal: {name: cgdetr, num_querys: 4}      # unknown head argument
    region: {name: regoin}                       # unknown head plugin
loss:
  head_weight: {temporal: 1.0}  # unknown key
  spec_weight: heavy            # wrong type
optim:
  freeze: [encoder, compressor, projector, llm, heads]   # nothing would train
  lr: {vit: 1.0e-5}             # unknown component
  momentum: 0.9                 # unknown key
""")
    problems = problems_of(load_config(exp, ["model.llm.config.num_hidden_layers=2", "data.num_workers=-1"]))
    b, e, cl = str(base), str(exp.resolve()), "command line"
    assert "nmae" in one(problems, b, "run.nmae", "unknown key") and "'name'" in one(problems, b, "run.nmae")
    assert "max_epochs" in one(problems, b, "trainer.max_epoch", "not an argument of lightning.Trainer")
    assert "'batch_size'" in one(problems, e, "data.batch_sise", "unknown key")
    one(problems, e, "data.eval_batch_size", "at least 1")
    one(problems, e, "data.max_length", "at least 1")
    assert "Did you mean 'temporal'" in one(problems, e, "data.tasks", "'temproal' is not one of chat, mcq")
    one(problems, e, "data.sampler.window", "required by samplers plugin 'window_for_test' but not set")
    one(problems, e, "model.encoder.depth", "expected int >= 0, got 'two'")
    assert "'tokens_per_frame'" in one(problems, e, "model.compressor.tokens_per_frme", "has no argument")
    assert "'mlp'" in one(problems, e, "model.projector.name", "unknown projector plugin 'mpl'")
    one(problems, e, "model.token_dropout.mood", "unknown key")
    one(problems, e, "model.token_dropout.layers", "beyond the LLM's 2 layers")
    assert "num_queries" in one(problems, e, "model.heads.temporal.num_querys", "has no argument")
    assert "'region'" in one(problems, e, "model.heads.region.name", "unknown head plugin 'regoin'")
    assert "head_weights" in one(problems, e, "loss.head_weight", "unknown key")
    one(problems, e, "loss.spec_weight", "expected float")
    one(problems, e, "optim.freeze", "nothing would train")
    one(problems, e, "optim.lr.vit", "'vit' is not one of encoder")
    one(problems, e, "optim.momentum", "unknown key")
    one(problems, cl, "data.num_workers", "must be at least 0, got -1")
    assert len(problems) >= 20


@pytest.mark.parametrize("overrides, key, what", [
    (["data.batch_size=0"], "data.batch_size", "at least 1"),
    (["data.eval_batch_size=-2"], "data.eval_batch_size", "at least 1"),
    (["data.max_length=0"], "data.max_length", "at least 1"),
    (["data.tasks=[mcq,chat,regoin]"], "data.tasks", "item 2: 'regoin' is not one of chat, mcq"),
    (["data.tasks=[]"], "data.tasks", "keeps no record"),
    (["optim.freeze=[encoder,compressor,projector,llm]"], "optim.freeze", "nothing would train"),
    (["model.token_dropout.enabled=true", "model.token_dropout.layers=[1,2]", "model.token_dropout.ratios=[0.5,0.5]"],
     "model.token_dropout.layers", "[2] is beyond the LLM's 2 layers"),
    (["model.token_dropout.enabled=true"], "model.token_dropout.layers", "beyond"),  # default layers [8, 16, 24]
    (["data.sampler.num_frames=6"], "data.sampler.num_frames", "not a multiple of model.compressor.clip_len=4"),
    (["model.llm.config.model_type=os.path"], "model.llm.config.model_type", "not a model type built into transformers"),
    (["model.llm.pretrained=/x"], "model.llm.pretrained", "got both"),
    (["model.compressor.name=[a,b]"], "model.compressor.name", "must be a registered name"),
    (["model.compressor.name=3"], "model.compressor.name", "must be a registered name"),
    (["model.heads.temporal.name=cgdetr", "model.heads.temporal.hidden_size=3"], "model.heads.temporal.hidden_size",
     "set by lrc"),
    (["loss.head_weights.mask=2"], "loss.head_weights.mask", "no head"),
    (["loss.dpo_reference=shared"], "loss.dpo_reference", "not one of"),
])
def test_incompatible_and_out_of_range_values(overrides, key, what, no_modules_built):
    problems = problems_of(load_config(DEMO, overrides))
    one(problems, "command line", key, what)


def test_fine_combinations_stay_fine():
    # LoRA keeps the LLM trainable through adapters, so freezing every component is then allowed
    validate(load_config(DEMO, ["optim.freeze=[encoder,compressor,projector,llm]", "model.llm.lora={r: 4}"]))
    validate(load_config(DEMO, ["data.tasks=[mcq,chat]", "data.eval_batch_size=1",
                                "model.token_dropout.enabled=true", "model.token_dropout.layers=[1]",
                                "model.token_dropout.ratios=[0.5]"]))


def test_non_string_keys_are_reported_not_crashed_on(tmp_path):
    exp = write(tmp_path / "e.yaml", f"base: [{DEMO}]\n1: x\ndata: {{2: 3}}\noptim: {{lr: {{4: 0.1}}}}\n"
                                     "model: {token_dropout: {5: 1}}\ntrainer: {6: 1}\nloss: {head_weights: {7: 1}}\n")
    problems = problems_of(load_config(exp))
    text = "\n".join(problems)
    for needle in ("1: unknown section", "data.2: unknown key", "optim.lr.4: 4 is not one of encoder",
                   "model.token_dropout.5: unknown key", "trainer.6: not an argument",
                   "loss.head_weights.7: expected str, got 7"):
        assert needle in text, text
