"""The result cache (``--cache DIR``): `disk` holds the entries (checksummed Parquet, written
atomically, evicted least recently used); `reuse` keys a run, reads what is cached, evaluates
the rest and replays every model's items to the run's observers."""
