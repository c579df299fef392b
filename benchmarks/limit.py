"""The limit: pyarrow reads the file alone (one shot, all cores), then K forward passes on the
preloaded tensors at the best batch size. ``python limit.py DATA BATCH THREADS CKPT...``"""

from __future__ import annotations

import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch
from _common import feature_names, load, loss_sum


def main() -> None:
    data, batch, threads, ckpts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
    torch.set_num_threads(threads)
    names = feature_names(load(ckpts[0])[0].in_features)
    start = time.perf_counter()
    if data.endswith(".parquet"):
        table = pq.read_table(data)
    else:
        types = dict.fromkeys(names, pa.float32()) | {"label": pa.int64()}
        table = pacsv.read_csv(data, convert_options=pacsv.ConvertOptions(column_types=types))
    x = torch.from_numpy(np.ascontiguousarray(table.select(names).to_tensor(row_major=True)))
    x = x.float()
    y = torch.from_numpy(table.column("label").to_numpy()).long()
    del table
    read = time.perf_counter() - start
    for path in ckpts:
        print(path, loss_sum(load(path), x, y, batch) / len(x))
    print(f"read {read:.2f} s, total {time.perf_counter() - start:.2f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
