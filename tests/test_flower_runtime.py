"""The Flower apps on Flower's runtimes: `flwr run` on a simulation SuperLink (Ray), and real
deployments (flower-superlink + 3 flower-supernode processes on 127.0.0.1), first --insecure,
then with TLS and SuperNode authentication. Each run's metrics are compared with `dfl run` on the
same config: equal seeds give the same batches and initial model, so the numbers agree to float
rounding (asserted: within 1e-6, tests/flower_helpers.assert_rows_match).

Every process is started in its own session and stopped (with all its descendants) in a finally
block. No network: telemetry off, runtime dependency installation off. Flower's simulation starts
and shuts down its own Ray, so it only ever runs in these subprocesses.
"""
from __future__ import annotations

import datetime
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.flower_helpers import (BIN, ROOT, Processes, assert_rows_match, env_for, flwr_run, free_port, reference,
                                  start_federation, wait_port, write_flwr_config)
from tests.helpers import read_metrics

pytestmark = pytest.mark.slow


def assert_same(out: Path, sets: str) -> list[dict]:
    """The run directory OUT is complete, a Flower run's, and its rows are `dfl run`'s."""
    rows = read_metrics(out)
    assert_rows_match(rows, reference(sets))
    for name in ("config.toml", "summary.json", "manifest.json"):
        assert (out / name).is_file()
    assert json.loads((out / "manifest.json").read_text())["runtime"] == "flower"
    return rows


# ------------------------------------------------------------------------- simulation runtime
@pytest.fixture(scope="module")
def sim_link(tmp_path_factory):
    """A SuperLink in simulation mode on a free port, and a FLWR_HOME pointing at it."""
    tmp = tmp_path_factory.mktemp("flwr-sim")
    port = free_port()
    write_flwr_config(tmp / "home", port)
    procs = Processes(tmp)
    try:
        link = procs.start("superlink", [str(BIN / "flower-superlink"), "--insecure", "--simulation",
                                         "--disable-runtime-dependency-installation",
                                         "--host", "127.0.0.1", "--port", str(port)],
                           env_for(tmp / "home"), tmp)
        wait_port(port, link)
        yield tmp
    finally:
        procs.stop()


SIM = ["--federation-config", "num-supernodes=6 client-resources-num-cpus=1"]


def test_simulation_fedavg_matches_dfl_run(sim_link):
    sets = "rounds=3 data.num_clients=6 algorithm.name=fedavg local.optimizer=sgd"
    out = sim_link / "fedavg"
    flwr_run(sim_link / "home", sets, out, SIM)
    rows = assert_same(out, sets)
    assert rows[-1]["consensus"] == 0.0


def test_simulation_dfedsam_ring_matches_dfl_run(sim_link):
    sets = "rounds=2 data.num_clients=6 algorithm.gossip_steps=2 algorithm.participation=0.5 topology.name=ring"
    out = sim_link / "dfedsam"
    flwr_run(sim_link / "home", sets, out, SIM)
    rows = assert_same(out, sets)
    assert rows[-1]["spectral_gap"] < 1 and rows[-1]["consensus"] > 0


def test_simulation_dfedavgm_on_a_time_varying_graph_matches_dfl_run(sim_link):
    # one matching per round (one-peer exponential): W changes every round, its own gap is 0
    sets = ("rounds=3 data.num_clients=6 algorithm.name=dfedavgm local.optimizer=sgd "
            "topology.name=one_peer_exponential")
    out = sim_link / "dfedavgm"
    flwr_run(sim_link / "home", sets, out, SIM)
    rows = assert_same(out, sets)
    assert all(r["spectral_gap"] == 0.0 for r in rows) and rows[-1]["consensus"] > 0


# ------------------------------------------------------------------------- the first command
def test_bare_flwr_run_on_flowers_default_federation(tmp_path):
    """`flwr run . --stream` as a new user types it, with a fresh FLWR_HOME: Flower creates its
    "local" connection and starts a simulation SuperLink whose default federation has 2
    SuperNodes. The app's default config then runs with 2 clients and says so; a config that
    fixes 3 clients stops at once with the fix. (out= keeps the run directories out of the
    checkout; private local-SuperLink ports; every process of this FLWR_HOME is stopped.)"""
    from dfl.bench.flower import _env, stop_processes

    home = tmp_path / "flwr-home"
    env = _env(home)

    def flwr(run_config: str, timeout: float) -> tuple[str, float]:
        t0 = time.monotonic()
        res = subprocess.run([str(BIN / "flwr"), "run", ".", "--stream", "--run-config", run_config], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return res.stdout + res.stderr, time.monotonic() - t0

    try:
        log, took = flwr(f'set="rounds=2" out="{tmp_path / "run"}"', 400)
        assert "dfl: the simulation federation has 2 SuperNodes" in log and "data.num_clients=2" in log, log[-3000:]
        deadline = time.monotonic() + 60
        while not (tmp_path / "run" / "manifest.json").exists():
            assert time.monotonic() < deadline, log[-3000:]
            time.sleep(0.5)
        manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
        assert (manifest["num_clients"], manifest["flower_runtime"]) == (2, "simulation")
        assert [r["round"] for r in read_metrics(tmp_path / "run")] == [1, 2]
        log, stopped = flwr(f'set="rounds=1 data.num_clients=3" out="{tmp_path / "run3"}"', 300)
        assert "dfl: error: the simulation federation has 2 SuperNodes but data.num_clients=3" in log, log[-3000:]
        assert '--federation-config "num-supernodes=3"' in log and stopped < 120
        assert not (tmp_path / "run3" / "metrics.jsonl").exists()
        print(f"bare `flwr run .`: {took:.0f} s (SuperLink start, 2 rounds); the 3-client config stopped "
              f"after {stopped:.0f} s")
    finally:
        stop_processes(home, grace=10)


# ------------------------------------------------------------------------- deployment runtime
def test_deployment_insecure_dfedsam(tmp_path):
    port = free_port()
    write_flwr_config(tmp_path / "home", port)
    procs = Processes(tmp_path)
    t0 = time.monotonic()
    try:
        start_federation(procs, tmp_path, port, ["--insecure"], ["--insecure"])
        sets = "rounds=2"
        flwr_run(tmp_path / "home", sets, tmp_path / "out")
        assert_same(tmp_path / "out", sets)
    except BaseException:
        print(procs.tail())
        raise
    finally:
        procs.stop()
    print(f"deployment (insecure) took {time.monotonic() - t0:.0f} s")


def test_deployment_compressed_gossip(tmp_path):
    """Choco-Gossip with QSGD messages between SuperNode processes: each node encodes with the
    random stream `dfl run` uses for its client, the relay forwards the encoded messages, and
    comm_mb (their bytes) equals `dfl run`'s."""
    port = free_port()
    write_flwr_config(tmp_path / "home", port)
    procs = Processes(tmp_path)
    try:
        start_federation(procs, tmp_path, port, ["--insecure"], ["--insecure"])
        sets = ("rounds=2 algorithm.gossip_steps=2 topology.name=ring algorithm.compression=qsgd algorithm.levels=3 "
                "algorithm.consensus_step=0.3")
        flwr_run(tmp_path / "home", sets, tmp_path / "out")
        rows = assert_same(tmp_path / "out", sets)
        assert rows[-1]["compression_ratio"] == reference(sets)[-1]["compression_ratio"] < 0.2
    except BaseException:
        print(procs.tail())
        raise
    finally:
        procs.stop()


def make_certificates(d: Path) -> tuple[Path, Path, Path]:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost it signed."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dfl test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(san, critical=False).sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = d / "ca.crt", d / "server.pem", d / "server.key"
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(cert.public_bytes(pem))
    paths[2].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


def make_node_keys(d: Path, n: int) -> list[Path]:
    """EC P-384 key pairs in OpenSSH format (what `flwr supernode register` and the SuperNode read)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    paths = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP384R1())
        path = d / f"node{i}_key"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))
        Path(f"{path}.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                      serialization.PublicFormat.OpenSSH))
        paths.append(path)
    return paths


def assert_wrong_key_refused(procs: Processes, tmp: Path, port: int, ca: Path, key: Path) -> None:
    """A SuperNode presenting a key different from the registered ones cannot join
    (--enable-supernode-auth): it claims to be client 0, but signs with `key`, not node0_key."""
    home = tmp / "intruder"
    home.mkdir()
    proc = procs.start("intruder", [str(BIN / "flower-supernode"), "--root-certificates", str(ca),
                                    "--auth-supernode-private-key", str(key), "--superlink", f"127.0.0.1:{port}",
                                    "--port", str(free_port()), "--max-retries", "1", "--max-wait-time", "10",
                                    "--node-config", "partition-id=0 num-partitions=3"], env_for(home), home)
    assert proc.wait(timeout=120) != 0
    assert "No SuperNode found with the given public key" in (tmp / "superlink.log").read_text()
    errors = [ln for ln in (tmp / "intruder.log").read_text().splitlines() if "ERROR" in ln or "rror" in ln]
    print("SuperNode with a wrong key refused:", errors[-1][:300] if errors else "(exit code only)")


def test_deployment_tls_node_auth_fedavg_and_wrong_key_rejected(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = make_certificates(certs)
    keys = make_node_keys(certs, 3)
    port = free_port()
    write_flwr_config(tmp_path / "home", port, ca=ca)
    procs = Processes(tmp_path)
    t0 = time.monotonic()
    try:
        link_tls = ["--ssl-ca-certfile", str(ca), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
                    "--enable-supernode-auth"]
        start_federation(procs, tmp_path, port, link_tls, ["--root-certificates", str(ca)], keys)
        sets = "rounds=2 algorithm.name=fedavg local.optimizer=sgd"
        flwr_run(tmp_path / "home", sets, tmp_path / "out")
        assert_same(tmp_path / "out", sets)
        wrong = make_node_keys(tmp_path, 1)[0]  # a fresh key pair: not the one registered for client 0
        assert_wrong_key_refused(procs, tmp_path, port, ca, wrong)
    except BaseException:
        print(procs.tail())
        raise
    finally:
        procs.stop()
    print(f"deployment (TLS + node auth) took {time.monotonic() - t0:.0f} s")
