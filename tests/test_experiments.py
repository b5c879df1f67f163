"""Every committed experiment config validates (plugin names, arguments, combinations)."""

from pathlib import Path

import pytest

from lrc.config import load_config, validate

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CONFIGS = sorted(p for p in EXPERIMENTS.rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_experiment_validates(path):
    validate(load_config(path))


def test_ablations_cover_the_hico_axes():
    names = {p.stem for p in (EXPERIMENTS / "ablations").glob("*.yaml")}
    for c in ("tome", "pooling", "qformer", "mlp"):
        assert f"compressor_{c}" in names
    assert {"tokens_per_frame_16", "tokens_per_frame_64", "token_dropout_on", "token_dropout_off",
            "sampler_fixed", "sampler_adaptive"} <= names
    cfg = validate(load_config(EXPERIMENTS / "ablations" / "compressor_mlp.yaml"))
    assert "tokens_per_frame" not in cfg["model"]["compressor"]  # mlp derives it from the shuffle
