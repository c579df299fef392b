"""What a careful user writes with pyarrow: read the whole file (CSV or Parquet, pyarrow's
defaults), then one forward pass per model over all rows. ``python pyarrow_script.py DATA
CKPT...``"""

from __future__ import annotations

import sys

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
from _common import feature_names, load
from torch import nn


def main() -> None:
    data, ckpts = sys.argv[1], sys.argv[2:]
    table = pq.read_table(data) if data.endswith(".parquet") else pacsv.read_csv(data)
    names = feature_names(load(ckpts[0])[0].in_features)
    x = torch.from_numpy(np.asarray(table.select(names).to_tensor(row_major=True))).float()
    y = torch.from_numpy(table.column("label").to_numpy()).long()
    del table
    for path in ckpts:
        with torch.no_grad():
            total = nn.functional.cross_entropy(load(path)(x), y, reduction="sum").item()
        print(path, total / len(x))


if __name__ == "__main__":
    main()
