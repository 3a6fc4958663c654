"""The system model ([system]): simulated round times against their closed forms."""

import numpy as np
import pytest

from dfl import system
from dfl.config import SystemConfig
from dfl.errors import ConfigError
from dfl.faults import FaultModel
from dfl.simulation import Simulation

from tests.conftest import small_config

#: Identical devices and links: every draw is its median.
HOMOGENEOUS = {"system.enabled": True, "system.speed_spread": 0.0, "system.bandwidth_spread": 0.0,
               "system.latency_spread": 0.0, "system.samples_per_s": 500.0, "system.bandwidth_mbps": 10.0,
               "system.latency_ms": 20.0}


def run(**changes):
    sim = Simulation(small_config(**{**HOMOGENEOUS, **changes}))
    return sim, sim.run()


# ---------------------------------------------------------------- closed forms


@pytest.mark.parametrize("q", [1, 3])
def test_ring_round_time_is_compute_plus_q_exchanges(q):
    algo = "dfedsam" if q == 1 else "dfedsam_mgs"
    sim, h = run(**{"algorithm.name": algo, "algorithm.gossip_steps": q, "topology.name": "ring"})
    K, B = 3, sim.client_data.batch_size
    compute = K * B * 2 / 500.0                                  # SAM: two gradients per step
    comm = q * (20e-3 + sim.model_bytes * 8 / 10e6)
    for t, row in enumerate(h, 1):
        assert row["sim_compute_s"] == pytest.approx(compute, rel=1e-12)
        assert row["sim_comm_s"] == pytest.approx(comm, rel=1e-12)
        assert row["sim_time_s"] == pytest.approx(t * (compute + comm), rel=1e-12)


def test_sgd_counts_one_pass_sam_two():
    _, sgd = run(**{"algorithm.name": "dfedavg"})
    _, sam = run(**{"algorithm.name": "dfedsam"})
    assert sam[0]["sim_compute_s"] == pytest.approx(2 * sgd[0]["sim_compute_s"])
    assert system.passes_per_step("mesa") == pytest.approx(4 / 3)             # one extra forward: 1/3
    assert system.passes_per_step("tram") == pytest.approx(2 + 1 / 3)


def test_one_slow_client_sets_the_round_time(tmp_path):
    trace = tmp_path / "speeds.txt"
    trace.write_text("# samples/s\n1000\n1000\n1000\n10   # the slow phone\n1000\n1000\n")
    sim, h = run(**{"system.trace_path": str(trace)})
    assert h[0]["sim_compute_s"] == pytest.approx(3 * sim.client_data.batch_size / 10.0)
    speeds = np.array([100.0, 100.0, 1.0, 100.0])
    assert system.compute_time(np.full(4, 5), 10, 1.0, speeds, np.ones(4, bool)) == pytest.approx(50.0)


def test_dropout_and_stragglers_change_the_wait():
    speeds = np.array([100.0, 100.0, 1.0, 100.0])
    steps = np.full(4, 5)
    dropped = np.array([True, True, False, True])                # the slow client drops out
    assert system.compute_time(steps, 10, 1.0, speeds, dropped) == pytest.approx(0.5)
    assert system.compute_time(steps, 10, 1.0, speeds, np.zeros(4, bool)) == 0.0
    assert system.compute_time(np.array([5, 5, 2, 5]), 10, 1.0, speeds, np.ones(4, bool)) == pytest.approx(20.0)


def test_dropped_clients_do_not_compute_in_a_run(tmp_path):
    n, trace = 6, tmp_path / "speeds.txt"
    trace.write_text("\n".join(str(10.0 * (i + 1)) for i in range(n)))     # client 0 the slowest
    sim, h = run(**{"system.trace_path": str(trace), "faults.dropout": 0.4, "rounds": 4})
    fm, B = FaultModel(sim.cfg.faults, sim.cfg.seed), sim.client_data.batch_size
    for t, row in enumerate(h):
        alive = ~fm.dropped(t, n)
        want = max((3 * B / (10.0 * (i + 1)) for i in range(n) if alive[i]), default=0.0)
        assert row["sim_compute_s"] == pytest.approx(want)
    assert len({row["sim_compute_s"] for row in h}) > 1       # the drops changed the wait


def test_centralized_baseline_uses_the_server_link():
    sim, h = run(**{"algorithm.name": "fedavg"})
    assert h[0]["sim_comm_s"] == pytest.approx(2 * (20e-3 + sim.model_bytes * 8 / 10e6))
    sim, h = run(**{"algorithm.name": "fedavg", "system.server_bandwidth_mbps": 1.0})
    assert h[0]["sim_comm_s"] == pytest.approx(2 * 6 * sim.model_bytes * 8 / 1e6)   # 6 clients share it


def test_compressed_payload_shrinks_comm_time_by_the_byte_ratio():
    plain = {"algorithm.name": "dfedsam", "system.latency_ms": 0.0}
    sim0, h0 = run(**plain)
    sim1, h1 = run(**plain, **{"algorithm.compression": "topk", "algorithm.compression_ratio": 0.1,
                               "algorithm.consensus_step": 0.5})
    ratio = sim1.algo.message_bytes(sim1.model_bytes) / sim1.model_bytes
    assert ratio < 0.5
    assert h1[0]["sim_comm_s"] == pytest.approx(ratio * h0[0]["sim_comm_s"], rel=1e-12)
    assert h1[0]["compression_ratio"] == pytest.approx(ratio)


def test_a_slow_link_from_the_edge_list_sets_the_exchange(tmp_path):
    links = tmp_path / "links.txt"
    links.write_text("3 2 0.5 100   # a slow link, either direction\n")
    sim, h = run(**{"system.links_path": str(links), "algorithm.gossip_steps": 2})
    assert h[0]["sim_comm_s"] == pytest.approx(2 * (0.1 + sim.model_bytes * 8 / 0.5e6))


def test_disabled_by_default_and_resumable():
    _, h = run(**{"system.enabled": False})
    assert not any(k.startswith("sim_") for k in h[-1])
    sim, h = run(**{"system.speed_spread": 0.6, "rounds": 3})
    other = Simulation(sim.cfg)
    other.load_state_dict({**sim.state_dict(), "round": 2})
    other.system.load_state_dict({"elapsed": h[1]["sim_time_s"]})
    assert other.run()[-1]["sim_time_s"] == pytest.approx(h[-1]["sim_time_s"])


# ---------------------------------------------------------------- draws and config


def test_draws_are_seeded_per_client_and_lognormal():
    a = system.lognormal(3, system.CLIENTS, np.arange(20000), 74.0, 0.6)
    assert np.array_equal(a[:10], system.lognormal(3, system.CLIENTS, np.arange(10), 74.0, 0.6))
    assert not np.array_equal(a[:10], system.lognormal(4, system.CLIENTS, np.arange(10), 74.0, 0.6))
    z = np.log(a / 74.0) / 0.6
    assert abs(np.median(a) / 74.0 - 1) < 0.03 and abs(z.std() - 1) < 0.03 and abs(z.mean()) < 0.03
    bw = system.lognormal(3, system.LINKS, np.arange(20000), 1.0, 1.0, 0)
    lat = system.lognormal(3, system.LINKS, np.arange(20000), 1.0, 1.0, 1)
    assert abs(np.corrcoef(np.log(bw), np.log(lat))[0, 1]) < 0.03
    sims = [run(**{"system.speed_spread": 0.6, "system.bandwidth_spread": 0.5})[1] for _ in range(2)]
    assert [r["sim_time_s"] for r in sims[0]] == [r["sim_time_s"] for r in sims[1]]


@pytest.mark.parametrize("changes, message", [
    ({"system.samples_per_s": -1.0}, "system.samples_per_s: must be > 0, got -1.0"),
    ({"system.speed_spread": -0.1}, "system.speed_spread: must be >= 0, got -0.1"),
    ({"system.bandwidth_mbps": 0.0}, "system.bandwidth_mbps: must be > 0, got 0.0"),
])
def test_config_errors_are_one_line(changes, message):
    with pytest.raises(ConfigError) as exc:
        small_config(**changes)
    assert str(exc.value) == message


def test_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "links.txt"
    bad.write_text("0 1 10 5\n0 9 10 5\n")
    cases = [({"system.trace_path": str(tmp_path / "nope.txt")}, "system.trace_path: file not found"),
             ({"system.links_path": str(bad)}, "line 2: nodes must be two different integers in [0, 6)")]
    for changes, part in cases:
        with pytest.raises(ConfigError) as exc:
            Simulation(small_config(**{**HOMOGENEOUS, **changes}))
        assert part in str(exc.value) and "\n" not in str(exc.value)
    assert SystemConfig().enabled is False


# ---------------------------------------------------------------- figure and report


def timed_runs(tmp_path):
    """A DFedSAM run (1 simulated s a round) and a FedAvg run (3 s a round) with sim_time_s."""
    from tests.fake_runs import edit_metrics, write_run
    for algo, per_round in (("dfedsam", 1.0), ("fedavg", 3.0)):
        edit_metrics(write_run(tmp_path / algo, algo=algo), sim_time_s=lambda row, k=per_round: k * row["round"])
    write_run(tmp_path / "untimed", algo="dfedavg")      # a run without [system]: left out / a dash
    return tmp_path


def test_time_figure_and_report_column(tmp_path):
    from dfl import plots, report
    from dfl.rundir.groups import group_runs
    from dfl.rundir.read import load_runs

    runs = load_runs([timed_runs(tmp_path)])
    groups = group_runs(runs)
    assert "time" in plots.default_figures(groups)
    fig = plots.plot_time(groups)
    acc_ax = fig.axes[0]
    assert acc_ax.get_xlabel() == "simulated time (s)" and len(acc_ax.get_lines()) == 2
    xs = {line.get_label(): line.get_xdata()[-1] for line in acc_ax.get_lines()}
    assert sorted(xs.values()) == [10.0, 30.0]
    target = 0.5
    table = report.build_markdown([tmp_path], target=target)
    head = table.splitlines()[0]
    assert "sim. s to 50.0%" in head
    col = head.split(" | ").index("sim. s to 50.0%")
    cells = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[col] for line in table.splitlines()[2:5]}
    for r in runs:
        want = report.sim_time_to_target(r, target)
        rnd = report.time_to_target(r, target)
        if r.has("sim_time_s"):
            assert want == (1.0 if r.algorithm == "dfedsam" else 3.0) * rnd[0]
            assert cells[r.label] == f"{want:.3g}"
        else:
            assert want is None and cells[r.label] == "\u2014"
    untimed = load_runs([tmp_path / "untimed"])
    assert "time" not in plots.default_figures(untimed)
    assert "sim. s" not in report.build_markdown([tmp_path / "untimed"], target=target)
