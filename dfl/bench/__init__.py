"""`dfl bench`: speed measured as ratios within one run, on whatever device is present.

    rounds.py      rows a-d: one round against the papers' per-client loop and a pooled model,
                   gossip against a memory copy, memory per client at scale
    end_to_end.py  row e: `dfl run` against Flower's simulation, end to end and per round
    flower.py      the Flower side of row e (a Flower simulation timed in its own processes)
    paper.py       `dfl bench --paper`: the DFedSAM paper's CIFAR-10 round with a projection
"""
from .rounds import QUICK, Sizes, bench_config, papers_loop_time, run_all

__all__ = ["QUICK", "Sizes", "bench_config", "papers_loop_time", "run_all"]
