"""`diffplex bench`: in-process benchmarks whose figures are ratios measured side by side in one run."""
