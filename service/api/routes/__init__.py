"""One router per resource: images, jobs, adapters, admin, health (probes, metrics, models, files)."""
