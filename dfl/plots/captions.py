"""What each figure of dfl.plots shows and what to look for: the captions of `dfl report`'s page."""

FIGURE_CAPTIONS = {
    "consensus": "Consensus distance \u039e = (1/n) \u03a3 \u2016x_i \u2212 x\u0304\u2016\u00b2 after each round's "
                 "gossip, log scale, one panel per topology. Dashed grey: what gossip alone would give, \u039e "
                 "shrinking by (1 \u2212 \u03b3)^(2Q) per round (\u03b3 the spectral gap of W; for a time-varying "
                 "graph, its period's gap), from the highest first value; none where gossip alone averages exactly "
                 "(complete graph, one period of one-peer exponential). Look for where a curve levels off above "
                 "its dashed slope: that floor is the drift of local training, which more gossip steps Q or a "
                 "better-connected graph lowers.",
    "accuracy": "Test accuracy of the averaged model x\u0304 (left) and mean test accuracy of the clients' own "
                "models (right) per round. Look for the distance between the panels: local models far below the "
                "averaged one mean clients that disagree (high consensus distance); the last rounds are the "
                "table's final accuracy.",
    "comm": "Test accuracy of the averaged model vs cumulative MB sent by all clients (gossip: each client sends "
            "Q \u00d7 degree \u00d7 model size per round). Look to the left: a curve that reaches an accuracy "
            "with fewer MB is the cheaper variant; more gossip steps Q buy accuracy per round at a multiple of the "
            "traffic.",
    "gap": "Final test accuracy (left) and final consensus distance (right) vs the effective spectral gap "
           "1 \u2212 (1 \u2212 \u03b3)^Q, one point per variant (bars: min-max over seeds). Look for the trend: "
           "a larger gap should lower the consensus distance and, on non-iid data, raise accuracy; a variant off "
           "the trend gains or loses more than mixing explains.",
    "flatness": "Flatness of the averaged model per round (largest Hessian eigenvalue, Hessian trace, "
                "sharpness). Lower is flatter: SAM-family local optimizers should sit below SGD.",
    "time": "Test accuracy of the averaged model (left) and consensus distance (right, log scale) vs simulated "
            "wall-clock time of the system model ([system]: device speeds, link bandwidths and latencies; each "
            "round waits for its slowest client and its slowest exchange). Look to the left: the variant that "
            "reaches an accuracy first wins in time, which need not be the one that wins in rounds.",
}
"""What each figure shows and what to look for (the report's captions)."""
