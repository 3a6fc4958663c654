"""Resume is exact for every algorithm and optimizer family: a run stopped after round 3 with a
checkpoint every 2 rounds and an evaluation every 2 rounds (so round 3 is replayed from round 2's
checkpoint, unevaluated) and continued with `dfl run --resume` writes the uninterrupted run's
metrics bit for bit, on both in-process engines."""
import pytest

from dfl.cli import main
from dfl.rundir.checkpoint import load_checkpoint
from dfl.simulation import Simulation
from tests.helpers import assert_same_history, interrupted_run, read_metrics, training_config

CASES = {
    "mofedsam": {"algorithm.name": "mofedsam", "algorithm.mofedsam_alpha": 0.5,
                 "algorithm.participation": 0.5, "algorithm.server_lr": 0.8},
    "dfedavgm-kept": {"algorithm.name": "dfedavgm", "local.reset_state": False},
    "dpsgd": {"algorithm.name": "dpsgd", "algorithm.participation": 0.5},
    "saf": {"algorithm.name": "dfedsam", "local.optimizer": "saf", "local.reset_state": False,
            "local.warmup_rounds": 1, "local.saf_epochs": 1},
    "mesa": {"algorithm.name": "dfedsam", "local.optimizer": "mesa", "local.warmup_rounds": 1},
    "tram": {"algorithm.name": "dfedsam", "local.optimizer": "tram", "local.rho": 0.1},
    "gsam-cosine": {"algorithm.name": "dfedsam", "local.optimizer": "gsam", "local.schedule": "cosine",
                    "local.rho_min": 0.01},
    "time-varying-faults": {"algorithm.name": "dfedsam_mgs", "algorithm.gossip_steps": 2,
                            "topology.name": "one_peer_exponential", "data.num_clients": 8,
                            "faults.dropout": 0.2, "faults.straggler": 0.3},
}


@pytest.mark.parametrize("engine", ["vectorized", "serial"])
@pytest.mark.parametrize("case", list(CASES))
def test_resume_writes_the_uninterrupted_metrics(case, engine, tmp_path):
    cfg = training_config(**{"rounds": 6, "eval_every": 2, "metrics.checkpoint_every": 2, "local.momentum": 0.5,
                             "engine.backend": engine, "engine.threads": 1, **CASES[case]})
    full = Simulation(cfg).run()
    assert [r["round"] for r in full] == [2, 4, 6]
    out = interrupted_run(cfg, tmp_path / "part", stop_after=3)
    assert [r["round"] for r in read_metrics(out)] == [2] and load_checkpoint(out)["round"] == 2
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    assert_same_history(full, read_metrics(out), tol=0)
