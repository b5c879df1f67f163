"""Shared fixtures: one small synthetic corpus (real MP4 files) and a tiny model config."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "experiments" / "demo" / "tiny.yaml"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """12 short videos (3–8 s) at 32 px: enough for every reader and a short fit, fast to write."""
    from lrc.data.synth import synthesize

    root = tmp_path_factory.mktemp("corpus")
    synthesize(root, videos=12, seed=3, size=32, min_seconds=3.0, max_seconds=8.0)
    return root


@pytest.fixture
def tiny_overrides(corpus, tmp_path) -> list[str]:
    """Shrinks the demo to seconds: 32 px frames, 4 frames, one-layer towers."""
    return tiny_override_list(corpus, tmp_path)


def tiny_override_list(corpus: Path, tmp_path: Path) -> list[str]:
    """The ``tiny_overrides`` list, for fixtures of a wider scope (tests/commands/test_ablate.py)."""
    return [
        f"data.root={corpus}", "data.synth_videos=null", "data.batch_size=4",
        "data.sampler.num_frames=4",
        "model.encoder.image_size=32", "model.encoder.patch_size=8", "model.encoder.embed_dim=64",
        "model.encoder.depth=1", "model.compressor.tokens_per_frame=4",
        "model.llm.config.hidden_size=64", "model.llm.config.intermediate_size=128",
        "model.llm.config.num_hidden_layers=1",
        f"run.root={tmp_path / 'runs'}", "trainer.max_epochs=1", "distributed.accelerator=cpu",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
    ]
