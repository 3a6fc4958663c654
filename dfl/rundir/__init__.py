"""The run directory: what `dfl run` writes and `dfl plot` / `dfl report` / dfl.load_runs read.

    config.toml      the resolved config (what --resume continues)
    metrics.jsonl    one JSON object per evaluated round, each line written whole
    summary.json     label, rounds, final row, best test accuracy (written at the end)
    manifest.json    versions, platform, seed, peak memory, the engine's choices, and "method":
                     the method's facts (dfl.methods.MethodFacts) that readers name the run by
    checkpoint.pt    the state after a round (tensors and plain values), for --resume

A sweep directory holds sweep.json and one run directory per run.

    write        writes one run directory (RunDir, prepare); imports torch
    checkpoint   checkpoint.pt: saved atomically, read back with weights_only (safe_load)
    read         reads run and sweep directories back (Run, load_runs); no torch
    groups       groups runs by everything but the seed and says what tells groups apart; no torch
"""
