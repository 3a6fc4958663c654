"""Shared fixtures: small configs that run in seconds on 2 cores."""
import os
import tempfile

import pytest

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
# generated data sets (mnist1d) are cached per test session, not in the home directory
os.environ.setdefault("DFL_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"dfl-test-cache-{os.getuid()}"))

import torch  # noqa: E402

from dfl.config import Config  # noqa: E402

# Tiny models on 2 cores: one intra-op thread is faster and steadier than two.
torch.set_num_threads(1)


def small_config(**changes) -> Config:
    """6 clients of digits, an MLP, 3 local steps, 2 rounds: a run takes well under a second."""
    base = {"rounds": 2, "data.num_clients": 6, "model.name": "mlp", "model.hidden": 32,
            "local.local_steps": 3, "local.batch_size": 16, "algorithm.name": "dfedavg"}
    base.update(changes)
    return Config().replace(**base)


@pytest.fixture
def float64():
    """Run a test with float64 as torch's default dtype (hand-derived values, tight tolerances)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def small():
    return small_config


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray for the module's runs: 2 CPUs and 4 pretend GPUs (placement over GPUs can be
    checked on a CPU machine); shut down after the module."""
    import gc

    ray = pytest.importorskip("ray")
    from dfl.engines import ray_session

    gc.collect()  # a Ray another module's runs started goes with them
    with ray_session._pythonpath():
        ray.init(num_cpus=2, num_gpus=4, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    yield
    ray.shutdown()
