"""A run, from settled options to reduced states: `plan` (every choice made before the pass),
`onepass` (blocks -> batches -> every model, read once), `engine` (a model's exact sums),
`sequential` (groups run one after another, replayed as one pass), `observers` (what watches
the pass), `export` (``--per-item``), `readahead` (the reader thread), `distributed` (rank,
world, exact reduction), `ranking` and `provenance` (the report)."""
