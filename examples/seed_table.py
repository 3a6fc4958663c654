"""The README's seed table (`dfl report DIR --markdown`) rebuilt from a DataFrame.

    make demo                                       # or: dfl run experiments/quickstart.toml --out runs/quickstart
    python examples/seed_table.py runs/quickstart   # the same table as: dfl report runs/quickstart --markdown

An example of analysing runs with pandas: `dfl.load_runs` gives one row per run and evaluated
round, `dfl.summarize` the mean and sample std over the seeds of each variant; the rest (best
accuracy, rounds to a target accuracy, the difference to a baseline) is a few lines of pandas.
Without a directory it runs a small sweep first (2 algorithms x 3 seeds, 20 rounds, in runs/seed_table).
"""
from __future__ import annotations

import argparse
import math

import pandas as pd

import dfl

SMALL = {"seed": [0, 1, 2], "rounds": 20, "eval_every": 5, "data": {"num_clients": 16},
         "model": {"name": "mlp", "hidden": 64}, "algorithm": {"name": ["dfedavg", "dfedsam"]},
         "engine": {"threads": 1}}


def fmt(mean: float, std: float, n: int, kind: str) -> str:
    """'mean ± std' as `dfl report` writes it: pct (x 100, 2 decimals), num (3 digits), int."""
    if not n or math.isnan(mean):
        return "\u2014"
    f = {"pct": lambda x: f"{100 * x:.2f}", "num": lambda x: f"{x:.3g}", "int": lambda x: f"{x:.0f}"}[kind]
    spread = f"{std:.2g}" if kind == "num" else f(std)
    return f(mean) + (f" \u00b1 {spread}" if n > 1 else "")


def seed_table(df: pd.DataFrame, baseline: str | None = None) -> str:
    """The summary table of `dfl report --markdown` from `dfl.load_runs`'s DataFrame."""
    final = dfl.summarize(df)                                   # per variant: n, <metric>_mean, <metric>_std
    per_run = df.groupby("run", sort=False).last()              # each run's last value of each metric
    target = 0.9 * per_run["test_acc"].max()                    # 90% of the best final accuracy
    variants = list(final.index)
    base = baseline or next((v for algo in ("DFedAvg", "FedAvg") for v in variants if v.split(",")[0] == algo),
                            variants[0])

    def column(series: pd.Series, kind: str) -> dict[str, str]:
        """Mean ± sample std over each variant's runs of a per-run series (NaN: not recorded)."""
        by = series.dropna().groupby(per_run["variant"], sort=False)  # aligned on the run
        return {v: fmt(s.mean(), 0.0 if s.nunique() == 1 else s.std(), len(s), kind) for v, s in by}

    best = df.groupby("run", sort=False)["test_acc"].max()
    hits = df[df["test_acc"] >= target].groupby("run", sort=False).first()  # first round at the target
    gap = "period_gap" if "period_gap" in per_run and per_run["period_gap"].notna().all() else "spectral_gap"
    cols = {"best": column(best, "pct"), "local": column(per_run["local_test_acc"], "pct"),
            "rounds_to": column(hits["round"].astype(float), "int"), "mb_to": column(hits["comm_mb"], "num"),
            "consensus": column(per_run["consensus"], "num"), "gap": column(per_run[gap], "num"),
            "wall": column(per_run["wall_s"], "num")}
    reached = hits.groupby("variant", sort=False).size()
    rounds = per_run.groupby("variant", sort=False)["round"].mean()
    head = ["variant", "n", "rounds", "final acc. %", "\u0394 final acc. vs baseline (pp)", "best acc. %",
            "final local acc. %", f"rounds to {100 * target:.1f}%", f"MB to {100 * target:.1f}%",
            "final consensus", "spectral gap", "wall s"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |"]
    b = final.loc[base]
    for v, r in final.iterrows():
        n, hit = int(r["n"]), int(reached.get(v, 0))
        d = r["test_acc_mean"] - b["test_acc_mean"]
        se = (math.sqrt(r["test_acc_std"] ** 2 / n + b["test_acc_std"] ** 2 / b["n"])  # of the difference
              if n > 1 and b["n"] > 1 else math.nan)
        delta = f"{100 * d:+.2f}" + (f" \u00b1 {100 * se:.2f}" if not math.isnan(se) else "")
        delta = "baseline" if v == base else delta
        partial = "" if hit == n else f" ({hit}/{n} seeds)"
        to_r = cols["rounds_to"][v] + partial if hit else "not reached"
        to_mb = cols["mb_to"][v] + partial if hit else "not reached"
        cells = [v, str(n), f"{rounds[v]:.0f}", fmt(r["test_acc_mean"], r["test_acc_std"], n, "pct"), delta,
                 cols["best"][v], cols["local"][v], to_r, to_mb, cols["consensus"][v], cols["gap"][v], cols["wall"][v]]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", help="a sweep (or run) directory; default: run a small sweep")
    parser.add_argument("--baseline", help="label of the baseline variant (default: DFedAvg, else FedAvg)")
    args = parser.parse_args()
    if args.dir is None:
        args.dir = "runs/seed_table"
        dfl.run(SMALL, out=args.dir, overwrite=True, quiet=True)
    df = dfl.load_runs(args.dir)
    print(f"{len(df)} rows ({df['run'].nunique()} runs x evaluated rounds), columns: {', '.join(df.columns[:8])}, ...")
    print()
    print(seed_table(df, args.baseline))


if __name__ == "__main__":
    main()
