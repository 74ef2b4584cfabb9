"""Asynchronous jobs: created, persisted, run, heart-beaten, recovered after a crash, cancelled and streamed
(manager.py lists which file holds which)."""

from service.jobs.manager import JobManager

__all__ = ["JobManager"]
