"""Suite-wide setup: nothing downloads, and `slow` / `gpu` tests skip cleanly where they cannot run."""

from __future__ import annotations

import os

# Set before any test imports transformers / diffusers / huggingface_hub, which read these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest

pytest_plugins = ["tests.fixtures"]  # tiny pipeline + export, shared by export, engine and service tests


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = os.environ.get("DIFFPLEX_SLOW") == "1"
    has_cuda = None  # torch is imported only when a gpu test is collected
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: set DIFFPLEX_SLOW=1 to run it"))
        if "gpu" in item.keywords:
            if has_cuda is None:
                import torch

                has_cuda = torch.cuda.is_available()
            if not has_cuda:
                item.add_marker(pytest.mark.skip(reason="gpu test: torch.cuda.is_available() is false"))
