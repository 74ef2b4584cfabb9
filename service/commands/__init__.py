"""The `diffplex` entry point and the subcommands that run the service (serve, worker, tenants)."""
