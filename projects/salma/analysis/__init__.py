"""Research tooling: ablation statistics and reports, the cost table, CMA attention maps."""
