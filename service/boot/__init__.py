"""Start-up, shared by `diffplex serve` and `diffplex worker`: the service state, loading the model, the lifespan
and the probes.
"""
