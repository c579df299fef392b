"""Statistics on exact sums: `exact` (float64 sums, correctly rounded and order-free),
`paired` (paired differences per item), `ratio` (paired ratios of documents of tokens),
`groupsum` (exact sums per group, vectorized)."""
