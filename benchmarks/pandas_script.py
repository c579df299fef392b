"""What a careful user writes: pandas.read_csv, then one forward pass per model over all rows.
``python pandas_script.py DATA CKPT...``"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import torch
from _common import feature_names, load
from torch import nn


def main() -> None:
    data, ckpts = sys.argv[1], sys.argv[2:]
    frame = pd.read_parquet(data) if data.endswith(".parquet") else pd.read_csv(data)
    names = feature_names(load(ckpts[0])[0].in_features)
    x = torch.from_numpy(frame[names].to_numpy(dtype=np.float32))
    y = torch.from_numpy(frame["label"].to_numpy()).long()
    for path in ckpts:
        with torch.no_grad():
            total = nn.functional.cross_entropy(load(path)(x), y, reduction="sum").item()
        print(path, total / len(x))


if __name__ == "__main__":
    main()
