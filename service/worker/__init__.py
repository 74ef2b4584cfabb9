"""`diffplex worker` runs jobs from the Redis job stream on the engine: the consumer (consumer.py); its command
is service/commands/worker.py."""

from service.worker.consumer import StreamWorker

__all__ = ["StreamWorker"]
