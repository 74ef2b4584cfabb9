"""`diffplex worker`: runs jobs from the Redis job stream on the engine (consumer.py, main.py)."""

from service.worker.consumer import StreamWorker

__all__ = ["StreamWorker"]
