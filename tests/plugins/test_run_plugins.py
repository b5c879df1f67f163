"""The plugins of how a fit runs (loggers, callbacks, optimizers; lrc/registry.py) build by name and are what
Lightning and torch take: parametrised over the registries, so a newly registered one is held to this too.
Also the learning-rate schedules, and how a config names these plugins (validated like any other slot)."""

import math

import pytest
import torch
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger

from lrc.config import load_config, validate
from lrc.errors import ConfigError, LrcError
from lrc.registry import CALLBACKS, LOGGERS, OPTIMIZERS
from lrc.train.build import instantiate
from lrc.train.module import lr_factor
from tests.conftest import DEMO

OPTIONAL = {"mlflow": "mlflow", "wandb": "wandb"}  # logger -> the package it needs (an extra)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in OPTIONAL else n  # imports take s
                                  for n in LOGGERS.names()])
def test_logger_builds_under_the_run_folder(name, tmp_path, monkeypatch):
    pytest.importorskip(OPTIONAL.get(name, "lightning"))
    monkeypatch.chdir(tmp_path)  # anything written outside save_dir would land here
    logger = instantiate(LOGGERS, {"name": name}, save_dir=str(tmp_path / "run" / "logs"), run_name="exp/run")
    assert isinstance(logger, Logger)
    logger.log_hyperparams({"optim": {"lr": {"llm": 1e-5}}, "run": {"name": "exp"}})
    logger.log_metrics({"train/loss": 1.5}, step=1)
    logger.save()
    if hasattr(logger, "finalize"):
        logger.finalize("success")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


@pytest.mark.parametrize("name", CALLBACKS.names())
def test_callback_builds_with_its_defaults(name):
    assert isinstance(instantiate(CALLBACKS, {"name": name}), Callback)


def _groups():
    torch.manual_seed(0)
    w, b, v = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.full((4,), 0.5)), torch.nn.Parameter(
        torch.randn(3, 3))
    return [{"params": [w], "lr": 0.1, "weight_decay": 0.01, "name": "llm"},
            {"params": [b], "lr": 0.1, "weight_decay": 0.0, "name": "llm"},
            {"params": [v], "lr": 0.01, "weight_decay": 0.0, "name": "encoder"}], (w, b, v)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_optimizer_keeps_each_groups_learning_rate_and_steps(name):
    groups, params = _groups()
    opt = instantiate(OPTIMIZERS, {"name": name}, params=groups)
    assert isinstance(opt, torch.optim.Optimizer)
    assert [(g["lr"], g["weight_decay"], g["name"]) for g in opt.param_groups] == [
        (0.1, 0.01, "llm"), (0.1, 0.0, "llm"), (0.01, 0.0, "encoder")]
    before = [p.detach().clone() for p in params]
    sum((p ** 2).sum() for p in params).backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, params))
    # a learning rate of 0 (a schedule's end) leaves the parameters as they are: the group's rate is the one used
    for group in opt.param_groups:
        group["lr"] = 0.0
    opt.zero_grad()
    after = [p.detach().clone() for p in params]
    sum((p ** 2).sum() for p in params).backward()
    opt.step()
    assert all(torch.allclose(a, p, atol=0) for a, p in zip(after, params))


def test_optimizer_arguments_are_its_own():
    groups, _ = _groups()
    adamw = instantiate(OPTIMIZERS, {"name": "adamw", "betas": [0.8, 0.95], "eps": 1e-6}, params=groups)
    assert adamw.defaults["betas"] == (0.8, 0.95) and adamw.defaults["eps"] == 1e-6
    sgd = instantiate(OPTIMIZERS, {"name": "sgd", "momentum": 0.5, "nesterov": True}, params=_groups()[0])
    assert sgd.defaults["momentum"] == 0.5 and sgd.defaults["nesterov"]
    with pytest.raises(ConfigError, match="momentum: must be in"):
        instantiate(OPTIMIZERS, {"name": "sgd", "momentum": 1.5}, params=_groups()[0])


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_schedules_warm_up_then_follow_their_shape(schedule):
    total, warmup, floor = 110, 10, 0.1  # 100 steps after the warmup
    f = [lr_factor(schedule, s, total, warmup, floor) for s in range(total + 1)]
    assert f[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])  # linear warmup from ~0 to 1
    assert f[warmup] == pytest.approx(1.0)
    if schedule == "constant":
        assert set(f[warmup:]) == {1.0}
        return
    assert f[total] == pytest.approx(floor)  # min_lr_ratio at the last step
    assert all(a >= b for a, b in zip(f[warmup:], f[warmup + 1:]))  # never rises after the warmup
    middle = f[warmup + (total - warmup) // 2]
    assert middle == pytest.approx(floor + (1 - floor) * 0.5)  # both halfway at half time
    quarter = f[warmup + (total - warmup) // 4]
    shape = (1 + math.cos(math.pi / 4)) / 2 if schedule == "cosine" else 0.75  # cosine stays high longer
    assert quarter == pytest.approx(floor + (1 - floor) * shape, rel=1e-6)


def validation_errors(*overrides: str) -> str:
    with pytest.raises(ConfigError) as exc:
        validate(load_config(DEMO, list(overrides)))
    return str(exc.value)


def test_a_config_names_loggers_callbacks_and_the_optimizer_and_gets_every_default():
    cfg = validate(load_config(DEMO, ["run.loggers=[csv,{name: mlflow, experiment_name: study}]",
                                      "run.callbacks=[lr_monitor,{name: early_stopping, monitor: val/mcq_acc, "
                                      "mode: max}]", "optim.optimizer.name=sgd", "optim.schedule=linear"]))
    assert cfg["run"]["loggers"] == [{"name": "csv", "flush_logs_every_n_steps": 100},
                                     {"name": "mlflow", "experiment_name": "study", "tracking_uri": None, "tags": None}]
    assert cfg["run"]["callbacks"][0] == {"name": "lr_monitor", "logging_interval": "step", "log_weight_decay": False}
    assert cfg["run"]["callbacks"][1]["patience"] == 3 and cfg["run"]["callbacks"][1]["mode"] == "max"
    assert cfg["optim"]["optimizer"] == {"name": "sgd", "momentum": 0.9, "dampening": 0.0, "nesterov": False}


def test_bad_names_and_arguments_are_reported_all_at_once_with_close_matches():
    err = validation_errors("run.loggers=[csv,mlfow,csv]", "run.callbacks=[{name: early_stopping, patience: 0}]",
                            "optim.optimizer.name=adamx", "optim.schedule=cosin", "trainer.logger=false",
                            "trainer.callbacks=[]")
    assert "run.loggers.1.name: unknown logger plugin 'mlfow'. Did you mean 'mlflow'?" in err
    assert "run.loggers.2: logger 'csv' is listed twice" in err
    assert "run.callbacks.0.patience: must be at least 1, got 0" in err
    assert "optim.optimizer.name: unknown optimizer plugin 'adamx'. Did you mean 'adamw'?" in err
    assert "optim.schedule: 'cosin' is not one of cosine, linear, constant. Did you mean 'cosine'?" in err
    assert "trainer.logger: name loggers in run.loggers instead" in err
    assert "trainer.callbacks: name callbacks in run.callbacks instead" in err


def test_a_missing_extra_is_a_validation_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mlflow", None)  # not installed
    err = validation_errors("run.loggers=[csv,mlflow]")
    assert "run.loggers.1.name: loggers plugin 'mlflow' needs the Python package 'mlflow'" in err
    assert 'pip install "lrc-video[mlflow]"' in err
    with pytest.raises(LrcError, match=r'pip install "lrc-video\[mlflow\]"'):
        instantiate(LOGGERS, {"name": "mlflow"}, save_dir="logs", run_name="x")
