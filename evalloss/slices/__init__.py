"""``--slice COL``: every model's exact figures per slice of the data. `sums` watches the pass
(a reducible state), `cells` adds a batch to every slice in a few NumPy calls, `gating` is the
per-slice gate rule (``max-slice-regression``). Reading the slice columns is the sources' part
(`sources.slicing`); drawing them the renderers' (`render.slicetable`, `render.sliceplot`)."""
