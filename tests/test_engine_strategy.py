"""engine.strategy, engine.precision and the memory plan (dfl/engines/plan.py).

vmap over a chunk == one client after another == the serial reference (to 1e-6, in a regime that
trains), for the optimizers, masks (partial participation, uneven step counts), kept state,
MoFedSAM's correction and the clip; on a CNN over digits and on VGG-11 with GroupNorm over
CIFAR-shaped inputs. auto's rule, the printed line and manifest.json; bf16 against fp32; the
memory estimate of the paper's 100 ResNet-18 clients against an 80 GB GPU."""
import json

import pytest
import torch

from dfl.bench.paper import cifar_shaped
from dfl.cli import main
from dfl.config import Config
from dfl.engines import plan
from dfl.errors import ConfigError
from dfl.simulation import Simulation
from tests.conftest import small_config
from tests.helpers import assert_same_history, training_config, write_config

STRATEGIES = ("vmap", "sequential")


def history(cfg, fed=None):
    return Simulation(cfg, fed=fed).run()


@pytest.mark.parametrize("algo,opt", [
    ("dfedavgm", "sgd"), ("dfedsam", "sam"), ("dfedsam", "asam"), ("dfedsam", "gsam"), ("dfedsam", "saf-kept"),
    ("dfedsam", "mesa"), ("dfedsam", "tram"), ("mofedsam", "sam"),
])
def test_sequential_equals_vmap_equals_serial(algo, opt):
    kept = opt.endswith("-kept")
    common = {"algorithm.name": algo, "local.optimizer": opt.removesuffix("-kept"), "local.momentum": 0.5,
              "local.reset_state": not kept, "model.name": "cnn", "local.clip_grad_norm": 1.0,
              "engine.threads": 1, "local.lr": 0.1,  # the cnn at lr 0.3 is chaotic: rounding grows to 1e-4
              **({"algorithm.mofedsam_alpha": 0.5} if algo == "mofedsam" else {}),
              **({"local.rho": 0.1} if opt == "tram" else {})}
    runs = {s: history(training_config(**common, **{"engine.strategy": s})) for s in STRATEGIES}
    serial = history(training_config(**common, **{"engine.backend": "serial"}))
    assert runs["vmap"][-1]["train_loss"] < runs["vmap"][0]["train_loss"] - 0.1  # the models move
    assert_same_history(runs["vmap"], runs["sequential"], tol=1e-6)
    assert_same_history(serial, runs["sequential"], tol=1e-6)


def test_sequential_with_partial_participation_uneven_steps_and_chunks():
    common = {"algorithm.participation": 0.5, "local.local_epochs": 0.5, "data.partition": "quantity",
              "algorithm.name": "dfedsam", "topology.name": "exponential", "local.momentum": 0.5,
              "engine.threads": 1}
    v = history(training_config(**common, **{"engine.strategy": "vmap", "engine.chunk_size": 4}))
    s = history(training_config(**common, **{"engine.strategy": "sequential", "engine.chunk_size": 4}))
    s1 = history(training_config(**common, **{"engine.strategy": "sequential", "engine.chunk_size": 1}))
    assert_same_history(v, s, tol=1e-6)
    assert_same_history(s, s1, tol=1e-6)
    assert v[-1]["active_clients"] == 3


@pytest.mark.parametrize("opt", ["sgd", "sam"])
def test_vgg11_on_cifar_shaped_inputs_same_numbers_every_way(opt):
    fed = cifar_shaped(3, 8, image=8, seed=1, test=32)
    common = {"model.name": "vgg11", "model.groups": 32, "data.num_clients": 3, "local.optimizer": opt,
              "algorithm.name": "dfedsam" if opt == "sam" else "dfedavgm", "local.momentum": 0.5,
              "local.local_steps": 2, "local.batch_size": 4, "local.lr": 0.05, "rounds": 2,
              "data.augment": "crop_flip", "local.clip_grad_norm": 10.0, "engine.threads": 1}
    v = history(small_config(**common, **{"engine.strategy": "vmap"}), fed)
    s = history(small_config(**common, **{"engine.strategy": "sequential"}), fed)
    r = history(small_config(**common, **{"engine.backend": "serial"}), fed)
    assert v[-1]["train_loss"] != v[0]["train_loss"]
    assert_same_history(v, s, tol=1e-6)
    assert_same_history(r, s, tol=1e-6)


def test_auto_picks_sequential_for_the_paper_models_and_vmap_for_small_ones():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    # activations of one sample (dfl.engines.vectorized.activation_numel): cnn on 8x8 digits 7,710;
    # vgg11 at 32x32 486,420; resnet18 at 32x32 2,351,636; cnn at 32x32 119,070
    assert plan.pick_strategy("auto", cpu, 53_002, 13, 7_710)[0] == "vmap"
    assert plan.pick_strategy("auto", cpu, 55_210, 32, 884)[0] == "vmap"  # the MLP of dfl bench
    assert plan.pick_strategy("auto", cpu, 9_231_114, 128, 486_420)[0] == "sequential"
    assert plan.pick_strategy("auto", gpu, 9_231_114, 128, 486_420)[0] == "sequential"
    assert plan.pick_strategy("auto", gpu, 11_173_962, 128, 2_351_636)[0] == "sequential"
    assert plan.pick_strategy("auto", gpu, 545_098, 128, 119_070)[0] == "vmap"
    assert plan.pick_strategy("vmap", cpu, 9_231_114, 128, 486_420) == ("vmap", "engine.strategy")
    strategy, why = plan.pick_strategy("auto", cpu, 9_231_114, 128, 486_420)
    assert why.startswith("auto: 71.49M numbers per client step >= 0.52M on cpu")


def test_the_choice_is_printed_and_recorded_in_the_manifest(tmp_path, capsys):
    cfg = write_config(tmp_path, **{"engine.threads": 1})
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("dfl: engine: "))
    assert "vmap (auto: " in line and "precision fp32" in line and "memory: ~" in line and "for a chunk of 6 clients" in line
    engine = json.loads((out / "manifest.json").read_text())["engine"]
    assert engine["strategy"] == "vmap" and engine["precision"] == "fp32" and engine["chunk_size"] == 6
    assert 0 < engine["memory_estimate_mb"] < engine["memory_capacity_mb"]


def test_strategy_and_precision_are_validated():
    with pytest.raises(ConfigError, match="engine.strategy: must be one of auto, vmap, sequential, got 'grouped'"):
        Config().replace(**{"engine.strategy": "grouped"})
    with pytest.raises(ConfigError, match="engine.precision: must be one of fp32, tf32, bf16, got 'fp16'"):
        Config().replace(**{"engine.precision": "fp16"})


def test_tf32_is_a_no_op_on_cpu():
    a = history(training_config(**{"engine.threads": 1, "model.name": "cnn"}))
    b = history(training_config(**{"engine.threads": 1, "model.name": "cnn", "engine.precision": "tf32"}))
    assert_same_history(a, b, tol=0)


@pytest.mark.parametrize("backend", ["vectorized", "serial"])
def test_bf16_trains_close_to_fp32(backend):
    """bf16 autocast in the forward (weights, descent and gossip fp32): a different run, whose
    accuracy is within 0.03 of fp32's (measured: 0 and 0.006 apart after 10 rounds, 0.65 both)."""
    common = {"engine.threads": 1, "model.name": "cnn", "engine.backend": backend, "algorithm.name": "dfedsam",
              "rounds": 10, "local.lr": 0.1}
    a = history(training_config(**common))
    b = history(training_config(**common, **{"engine.precision": "bf16"}))
    assert a[-1]["test_acc"] > 0.5
    assert b[-1]["train_loss"] != a[-1]["train_loss"]  # bf16 did run
    assert abs(b[-1]["test_acc"] - a[-1]["test_acc"]) <= 0.03
    assert b[-1]["train_loss"] == pytest.approx(a[-1]["train_loss"], rel=0.01)


def test_bf16_autocasts_the_forward_only():
    sim = Simulation(training_config(**{"engine.precision": "bf16", "engine.threads": 1, "model.name": "cnn"}))
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append(o.dtype)) for m in sim.model.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    sim.step()
    for h in hooks:
        h.remove()
    assert set(seen) == {torch.bfloat16}
    assert sim.bank.dtype == torch.float32


@pytest.mark.slow
def test_bf16_quickstart_accuracy_within_tolerance_of_fp32():
    """experiments/quickstart.toml's DFedSAM run (seed 0, 300 rounds) in bf16 and fp32: measured
    0.515 both (over the quickstart's 6 runs at most 0.008 apart); tolerance 0.02."""
    from pathlib import Path

    from dfl import sweep

    _, variants = sweep.load(Path(__file__).resolve().parents[1] / "experiments" / "quickstart.toml")
    cfg = next(v.config for v in variants if v.config.algorithm.name == "dfedsam" and v.config.seed == 0)
    a = history(cfg.replace(**{"engine.threads": 1}))
    b = history(cfg.replace(**{"engine.threads": 1, "engine.precision": "bf16"}))
    assert abs(b[-1]["test_acc"] - a[-1]["test_acc"]) <= 0.02


def test_channels_last_only_for_sequential_steps_on_cuda():
    assert plan.channels_last("sequential", torch.device("cuda"))
    assert not plan.channels_last("sequential", torch.device("cpu"))
    assert not plan.channels_last("vmap", torch.device("cuda"))


GB = 2 ** 30
RESNET18 = dict(dim=11_173_962, activations=2_351_636, batch=128)  # CIFAR, 10 classes


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("momentum_kept", [False, True])
def test_100_resnet18_clients_fit_an_80_gb_gpu(strategy, momentum_kept):
    """Bank copies + optimizer state (a momentum buffer per client, kept across rounds or not) +
    one chunk's step, the chunk sized from 80 GB free: under 80 GB."""
    p = plan.plan_memory(n=100, **RESNET18, state_numel=RESNET18["dim"] + 1, strategy=strategy,
                         reset_state=not momentum_kept, free=80 * GB)
    plan.check_total(p, 80 * GB, torch.device("cuda"), 100, RESNET18["dim"])
    assert p.total < 80 * GB * 0.5
    bank = 100 * RESNET18["dim"] * 4
    assert p.fixed == 3 * bank + (100 * 4 * (RESNET18["dim"] + 1) if momentum_kept else 0)
    # one client's step: activations of a batch of 128 dominate (4 x 128 x 2.35M floats = 4.5 GB)
    assert p.one_client == 4 * (12 * RESNET18["dim"] + 4 * 128 * 2_351_636)
    assert p.chunk == (100 if strategy == "sequential" else int(0.25 * 80 * GB // p.one_client))
    line = p.line("ResNet18GN", torch.device("cuda"), 80 * GB)
    assert line.startswith(f"memory: ~{p.total / GB:.1f} GB for a chunk of {p.chunk} clients of ResNet18GN")


def test_a_run_that_cannot_fit_is_one_line_before_anything_is_allocated():
    p = plan.plan_memory(n=1000, **RESNET18, state_numel=1, strategy="sequential", reset_state=True, free=80 * GB)
    with pytest.raises(ConfigError) as err:
        plan.check_total(p, 80 * GB, torch.device("cuda"), 1000, RESNET18["dim"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("engine: 1000 clients of a model of 11,173,962 parameters need about")
    assert "data.num_clients" in msg and 'engine.backend = "ray"' in msg


def test_the_engine_refuses_a_federation_whose_banks_do_not_fit(monkeypatch, tmp_path, capsys):
    from dfl.engines import vectorized

    sim = Simulation(small_config(**{"engine.threads": 1}))
    one = sim.engine.memory.one_client
    monkeypatch.setattr(vectorized, "capacity", lambda device: 2 * one)  # one client fits, 6 do not
    cfg = write_config(tmp_path, **{"engine.threads": 1})
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "engine: 6 clients of a model of" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_gpu_sequential_equals_vmap(precision):
    common = {"engine.device": "cuda", "model.name": "cnn", "algorithm.name": "dfedsam", "local.momentum": 0.5,
              "engine.precision": precision}
    v = history(training_config(**common, **{"engine.strategy": "vmap"}))
    s = history(training_config(**common, **{"engine.strategy": "sequential"}))
    assert_same_history(v, s, tol=1e-5 if precision == "fp32" else 2e-2)
