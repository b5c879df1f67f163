"""A fit's loggers, callbacks, optimizer and progress display, named in the config (docs/logging.md): short real
fits of the tiny demo. Also: `lrc test` and `lrc export` write only where --out says."""

import csv
import json
import re
import sqlite3

import pytest
import yaml

from lrc.cli import main
from tests.conftest import DEMO


def rows(path):
    return list(csv.DictReader(path.open()))


@pytest.mark.slow
def test_csv_logger_callbacks_optimizer_and_progress_lines(tiny_overrides, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written to the working directory
    run = tmp_path / "run"
    code = main(["fit", str(DEMO), "--out", str(run), *tiny_overrides, "run.loggers=[csv]",
                 "run.callbacks=[lr_monitor,throughput,{name: early_stopping, monitor: val/loss}]",
                 "optim.optimizer.name=sgd", "optim.schedule=linear", "optim.warmup_ratio=0", "optim.min_lr_ratio=0.1",
                 "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=true", "run.progress_every_s=0.001"])
    err = capsys.readouterr().err
    assert code == 0, err[-2000:]
    # stderr is not a terminal here: plain progress lines, each with the loss, rates, memory and the time left
    lines = [line for line in err.splitlines() if re.match(r"(step|trained) \d+/10 ", line)]
    assert len(lines) >= 5 and lines[-1].startswith("trained 10/10 (100%)")
    assert all(key in lines[0] for key in ("loss ", "lr ", "samples/s ", "vis_tok/s ", "mem ", "elapsed ", "eta "))
    assert "v_num" not in err
    # only the CSV logger: its metrics hold the callbacks' figures; its hparams.yaml is the resolved config
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["hparams.yaml", "metrics.csv"]
    logged = rows(run / "logs" / "metrics.csv")
    columns = set(logged[0])
    assert {"train/loss", "lr/llm", "lr/encoder", "perf/samples_per_s", "perf/visual_tokens_per_s"} <= columns
    llm_lr = [float(r["lr/llm"]) for r in logged if r.get("lr/llm")]
    assert llm_lr[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(llm_lr, llm_lr[1:]))  # linear decay
    tokens = [float(r["perf/visual_tokens_per_s"]) for r in logged if r.get("perf/visual_tokens_per_s")]
    assert tokens and all(t > 0 for t in tokens)
    hparams = yaml.safe_load((run / "logs" / "hparams.yaml").read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert hparams["optim"] == config["optim"] and hparams["optim"]["optimizer"]["name"] == "sgd"
    assert hparams["run"]["loggers"] == [{"name": "csv", "flush_logs_every_n_steps": 100}]
    plugins = config["_lrc"]["plugins"]
    assert plugins["optim.optimizer"]["origin"] == "lrc_plugins.optimizers.sgd:SGD"
    assert plugins["run.loggers.0"]["origin"] == "lrc_plugins.loggers.csv:CSVMetricsLogger"
    assert plugins["run.callbacks.2"]["name"] == "early_stopping"

    # `lrc test` and `lrc export` write where --out says, and nowhere else (run.root stays unmade)
    root = next(o.split("=", 1)[1] for o in tiny_overrides if o.startswith("run.root="))
    assert main(["test", str(DEMO), "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "eval"),
                 *tiny_overrides, "run.loggers=[csv]"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "export"), "--no-hf-llm"]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["val/mcq_count"] > 0
    assert (tmp_path / "export" / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval", "export", "run"]
    assert not (tmp_path / root).exists()


@pytest.mark.slow
def test_mlflow_logs_into_the_run_folder(tiny_overrides, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    assert main(["fit", str(DEMO), "--out", str(run), *tiny_overrides, "run.loggers=[csv,mlflow]",
                 "trainer.log_every_n_steps=2"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # offline: a database in the run folder
    db = sqlite3.connect(run / "logs" / "mlflow.db")
    (run_name,), = db.execute("select name from runs").fetchall()
    assert run_name == "demo-tiny/run"
    params = dict(db.execute("select key, value from params").fetchall())
    assert params["optim/optimizer/name"] == "adamw" and params["model/compressor/name"] == "tome"
    assert params["run/loggers/1/name"] == "mlflow" and params["run/loggers/1/tracking_uri"] == "None"
    metrics = {key for (key,) in db.execute("select distinct key from metrics")}
    assert {"train/loss", "val/loss", "val/mcq_acc"} <= metrics


def test_a_run_from_before_the_optimizer_plugin_still_reads(tmp_path):
    """Its config.yaml has optim.betas, which is now the adamw optimizer's argument: a resume reads it as such."""
    from omegaconf import OmegaConf

    from lrc.config import LoadedConfig, load_config, validate
    from lrc.train.rundir import read_run_config

    old = validate(load_config(DEMO))
    del old["optim"]["optimizer"], old["run"]["loggers"], old["run"]["callbacks"]
    old["optim"]["betas"] = [0.9, 0.95]
    (tmp_path / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(old)))
    saved = read_run_config(tmp_path)
    assert saved["optim"]["optimizer"] == {"name": "adamw", "betas": [0.9, 0.95]} and "betas" not in saved["optim"]
    cfg = validate(LoadedConfig(OmegaConf.create(saved), tmp_path / "config.yaml", {}))
    assert cfg["optim"]["optimizer"]["betas"] == [0.9, 0.95] and cfg["run"]["loggers"][0]["name"] == "csv"
