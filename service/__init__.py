"""The serving side: FastAPI app, continuous-batching engine, runtimes, stores, worker and the `diffplex` CLI."""
