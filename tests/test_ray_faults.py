"""engine.backend = "ray" under faults: an actor killed inside training, inside a (compressed) gossip step,
again during the replay of its round, before the driver noticed (already restarted, empty), more
often than Ray restarts it; a centralized algorithm; and dfl's simulated [faults] (dropout, link
failures, stragglers) on Ray equal to the vectorized backend.

Deaths are injected from the driver, inside the operation: the actor's process is killed right
before the operation's remote calls are sent, so the operation fails and must recover mid-round.
"""
import os
import signal
import time

import pytest

from dfl.simulation import Simulation
from tests.helpers import assert_same_history, training_config

ray = pytest.importorskip("ray")

from dfl.engines import ray_session  # noqa: E402

pytestmark = pytest.mark.slow  # a local Ray and actor restarts (~1 s each): ~1 min on 2 cores

CPU = {"engine.cpus_per_actor": 0.5, "engine.backend": "ray"}


def kill(engine, i):
    """SIGKILL actor i's process; returns its pid."""
    pid = ray.get(engine.actors[i].info.remote())["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


def kill_before(engine, method, when, actor=1):
    """Wrap engine.<method> (an operation's remote part): before the calls whose arguments
    satisfy when(call_index, *args), kill `actor`."""
    orig = getattr(engine, method)
    calls = []

    def wrapped(*args):
        calls.append(args)
        if when(len(calls) - 1, *args):
            kill(engine, actor)
        return orig(*args)

    setattr(engine, method, wrapped)
    return calls


def run_ray(cfg, setup):
    sim = Simulation(cfg)
    try:
        if sim.engine.actors == []:
            sim.engine._start()
        setup(sim.engine)
        return sim.run()
    finally:
        sim.close()


def reference(cfg):
    return Simulation(cfg.replace(**{"engine.backend": "vectorized"})).run()


def test_actor_killed_inside_training_is_recovered_exactly(local_ray):
    cfg = training_config(**CPU, **{"algorithm.name": "dfedavgm", "local.reset_state": False})
    # call 1 is round 2's training (call 2 its retry after the recovery)
    got = run_ray(cfg, lambda t: kill_before(t, "_train", lambda i, *a: i == 1))
    assert_same_history(reference(cfg), got)
    assert [r["actor_restarts"] for r in got] == [0, 1, 1]


def test_actor_killed_inside_a_gossip_step_replays_the_rounds_training(local_ray):
    cfg = training_config(**CPU, **{"algorithm.name": "dfedsam_mgs", "algorithm.gossip_steps": 2})
    trained = []

    def setup(t):
        trained.extend([kill_before(t, "_mix", lambda i, *a: i == 1), kill_before(t, "_train", lambda i, *a: False)])

    got = run_ray(cfg, setup)
    mixes, trains = trained
    assert len(trains) == 3 + 1  # round 2's training ran again in the replay
    assert_same_history(reference(cfg), got)
    assert [r["actor_restarts"] for r in got] == [0, 1, 1]


def test_a_second_death_during_the_replay(local_ray):
    cfg = training_config(**CPU, **{"algorithm.name": "dpsgd", "algorithm.participation": 0.5, "rounds": 4})

    def setup(t):
        kill_before(t, "_mix", lambda i, *a: i == 1, actor=1)
        # the 3rd training call is round 2's replay (after the death in its gossip): kill another actor
        kill_before(t, "_train", lambda i, *a: i == 2, actor=2)

    got = run_ray(cfg, setup)
    assert_same_history(reference(cfg), got)
    assert got[-1]["actor_restarts"] == 2


def test_an_actor_restarted_before_the_driver_noticed(local_ray):
    """The actor died between rounds and Ray already restarted it (empty): the next operation
    must recover as from a death, not fail on the empty actor."""
    cfg = training_config(**CPU, **{"algorithm.name": "dfedavg"})

    def on_round(sim, row):
        if sim.round == 1:
            old = kill(sim.engine, 1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    info = ray.get(sim.engine.actors[1].info.remote(), timeout=5)
                    if info["pid"] != old:
                        assert not info["ready"]
                        return
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError,
                        ray.exceptions.GetTimeoutError):
                    pass
                time.sleep(0.1)
            raise AssertionError("the actor was not restarted")

    sim = Simulation(cfg)
    try:
        got = sim.run(on_round)
    finally:
        sim.close()
    assert_same_history(reference(cfg), got)
    assert [r["actor_restarts"] for r in got] == [0, 1, 1]


def test_running_out_of_restarts_is_a_clear_error(local_ray):
    from dfl.errors import DflError

    cfg = training_config(**CPU, **{"algorithm.name": "dfedavg", "rounds": 2 + ray_session.MAX_RESTARTS})
    sim = Simulation(cfg)
    try:
        sim.engine._start()

        def every_round(s, row):
            kill(s.engine, 1)
        with pytest.raises(DflError, match="Ray actors kept dying"):
            sim.run(every_round)
    finally:
        sim.close()


@pytest.mark.parametrize("algo", ["fedavg", "mofedsam"])
def test_centralized_algorithm_recovers_from_a_death_in_training(local_ray, algo):
    cfg = training_config(**CPU, **{"algorithm.name": algo, "algorithm.participation": 0.5})
    got = run_ray(cfg, lambda t: kill_before(t, "_train", lambda i, *a: i == 1))
    assert_same_history(reference(cfg), got)
    assert got[-1]["actor_restarts"] == 1


@pytest.mark.parametrize("algo", ["dfedavg", "dpsgd", "fedavg"])
def test_simulated_faults_on_ray_equal_vectorized(local_ray, algo):
    cfg = training_config(**CPU, **{"algorithm.name": algo, "faults.dropout": 0.3, "faults.link_failure": 0.3,
                                    "faults.straggler": 0.5, "rounds": 4})
    sim = Simulation(cfg)
    try:
        got = sim.run()
    finally:
        sim.close()
    ref = reference(cfg)
    assert_same_history(ref, got)
    assert len({r["active_clients"] for r in ref}) > 1
    assert sum(r["stragglers"] for r in ref) > 0 or algo == "dpsgd"  # one step a round: nothing to cut


def test_actor_killed_inside_a_compressed_gossip_step(local_ray):
    """Round 2's exchange starts from x_hat and the copies of round 1 (restored from the snapshot
    on every actor, the restarted one too): the run goes on with the vectorized engine's numbers."""
    cfg = training_config(**CPU, **{"algorithm.name": "dfedsam_mgs", "algorithm.gossip_steps": 2,
                                    "algorithm.compression": "qsgd", "algorithm.consensus_step": 0.3})
    got = run_ray(cfg, lambda t: kill_before(t, "_compressed_mix", lambda i, *a: i == 1))
    assert_same_history(reference(cfg), got)
    assert [r["actor_restarts"] for r in got] == [0, 1, 1]
