"""Statistics on exact sums: `exact` (float64 sums, correctly rounded and order-free),
`paired` (paired differences per item), `ratio` (paired ratios of documents of tokens),
`groupsum` (exact sums per group, vectorized), `state` (reducible state declared once: each
field's merge across processes, one generic `state` / `merge_states`)."""
