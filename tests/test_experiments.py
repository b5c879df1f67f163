"""Every committed experiment config validates (plugin names, arguments, combinations)."""

import re
from pathlib import Path

import pytest

from lrc.config import load_config, validate

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
# ablation files (one `ablation:` mapping, run by `lrc ablate`) are studies, not experiment configs
STUDIES = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if re.search(r"^ablation:", p.read_text(), re.M))
CONFIGS = sorted(p for p in EXPERIMENTS.rglob("*.yaml") if p not in STUDIES)
# what `make base` writes and the configs on the tiny base load (model.init.path, relative to the working directory)
BUILT_BY_MAKE_BASE = ("runs/base/stage1", "runs/base/model")


@pytest.fixture(autouse=True)
def in_a_checkout_after_make_base(tmp_path, monkeypatch):
    """Validation checks that model.init.path exists: run it where `make base`'s outputs are (empty) folders."""
    for folder in BUILT_BY_MAKE_BASE:
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_experiment_validates(path):
    validate(load_config(path))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_study_expands_and_every_cell_validates(path):
    from lrc.commands.ablate import load_plan, validate_cells

    plan = load_plan(path)
    configs, invalid = validate_cells(plan)
    assert not invalid and len(configs) == len(plan.cells) > 1


def test_the_default_studies_exist():
    assert {"compressors", "tokens_per_frame", "hico_x_tpo"} <= {p.stem for p in STUDIES}


def test_ablations_cover_the_hico_axes():
    names = {p.stem for p in (EXPERIMENTS / "ablations").glob("*.yaml")}
    for c in ("tome", "pooling", "qformer", "mlp"):
        assert f"compressor_{c}" in names
    assert {"tokens_per_frame_16", "tokens_per_frame_64", "token_dropout_on", "token_dropout_off",
            "sampler_fixed", "sampler_adaptive"} <= names
    cfg = validate(load_config(EXPERIMENTS / "ablations" / "compressor_mlp.yaml"))
    assert "tokens_per_frame" not in cfg["model"]["compressor"]  # mlp derives it from the shuffle
