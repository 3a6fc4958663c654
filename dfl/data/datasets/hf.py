"""Image-classification datasets from the Hugging Face Hub (``data.name = "hf:<id>"``) through
flwr-datasets, an optional extra (``pip install "dfl[hf]"``)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import DataError
from .base import Pooled, pack


def _hf_arrays(ds: Any, dataset_id: str) -> tuple[np.ndarray, np.ndarray]:
    cols = list(ds.column_names)
    xkey = next((k for k in ("img", "image", "pixel_values") if k in cols), None)
    ykey = next((k for k in ("label", "fine_label", "labels") if k in cols), None)
    if xkey is None or ykey is None:
        raise DataError(f"dataset 'hf:{dataset_id}': need an image column (img/image) and a label column "
                        f"(label/fine_label), found {cols}")
    x = np.stack([np.asarray(im, dtype=np.float32) for im in ds[xkey]]) / 255.0
    x = x[:, None] if x.ndim == 3 else np.transpose(x, (0, 3, 1, 2))
    return x, np.asarray(ds[ykey], dtype=np.int64)


def load_hf(dataset_id: str, seed: int, test_fraction: float) -> Pooled:
    """An image-classification dataset from the Hugging Face Hub through flwr-datasets (optional extra)."""
    try:
        from flwr_datasets import FederatedDataset
    except ImportError:
        raise DataError(f"dataset 'hf:{dataset_id}' needs flwr-datasets: pip install \"dfl[hf]\"") from None
    try:
        fds = FederatedDataset(dataset=dataset_id, partitioners={"train": 1})
        train = fds.load_split("train")
        try:
            test = fds.load_split("test")
        except (ValueError, KeyError):
            test = None
    except Exception as exc:  # network, unknown id, ...: one line for the user
        raise DataError(f"dataset 'hf:{dataset_id}': could not load through flwr-datasets ({exc})") from None
    x_tr, y_tr = _hf_arrays(train, dataset_id)
    if test is not None:
        x_te, y_te = _hf_arrays(test, dataset_id)
    else:
        perm = np.random.default_rng(seed).permutation(len(y_tr))
        cut = int(round(len(perm) * (1 - test_fraction)))
        (x_tr, x_te), (y_tr, y_te) = (x_tr[perm[:cut]], x_tr[perm[cut:]]), (y_tr[perm[:cut]], y_tr[perm[cut:]])
    feature = getattr(train, "features", {}).get("label") if hasattr(train, "features") else None
    num_classes = int(getattr(feature, "num_classes", 0) or int(max(y_tr.max(), y_te.max())) + 1)
    return pack(x_tr, y_tr, x_te, y_te, num_classes, f"hf:{dataset_id}")
