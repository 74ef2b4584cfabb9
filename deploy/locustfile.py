"""Closed-loop diffplex users for locust, driven by the same workload files as `diffplex loadtest`.

Each user draws its requests from the workload's weighted mix (tenant by weight, then a request kind
that tenant sends) and sends the next one as soon as the last is answered. Tenants and adapters are set
up once beforehand; their keys come from the environment (`DIFFPLEX_KEY_<TENANT>`, or a tenant's
`key_env` in the file):

    eval "$(diffplex loadtest --url http://127.0.0.1:8000 --workload deploy/loadtest/two-tenants.yaml \\
        --admin-key "$(cat .work/data/admin_key)" --setup-only)"
    locust -f deploy/locustfile.py --host http://127.0.0.1:8000 --users 8 --spawn-rate 2
    # DIFFPLEX_WORKLOAD=path/to/other.yaml picks another workload file.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from locust import HttpUser, constant, task

from service.loadtest.client import GENERATIONS
from service.loadtest.mix import RequestMix
from service.loadtest.workload import WorkloadError, load_workload

WORKLOAD_FILE = Path(os.environ.get("DIFFPLEX_WORKLOAD", Path(__file__).parent / "loadtest" / "two-tenants.yaml"))
try:
    WORKLOAD = load_workload(WORKLOAD_FILE, check_files=False)  # adapters are on the server already
except WorkloadError as error:
    raise SystemExit(f"deploy/locustfile.py: {error}") from None
if missing := [t.key_variable for t in WORKLOAD.tenants if not os.environ.get(t.key_variable)]:
    raise SystemExit(
        f"deploy/locustfile.py: set {', '.join(missing)} to the tenants' API keys; "
        f'`eval "$(diffplex loadtest --url URL --workload {WORKLOAD_FILE} --admin-key KEY --setup-only)"` '
        "creates the tenants, uploads their adapters and prints them"
    )
KEYS = {t.name: os.environ[t.key_variable] for t in WORKLOAD.tenants}
_user_numbers = itertools.count()


class DiffplexUser(HttpUser):
    wait_time = constant(0)  # closed loop: the next request leaves when the last answer is in

    def on_start(self) -> None:
        self.mix = RequestMix(WORKLOAD, [WORKLOAD.seed, next(_user_numbers)])  # reproducible, distinct per user

    @task
    def generate(self) -> None:
        draw = self.mix.draw()
        with self.client.post(
            GENERATIONS,
            json=draw.body,
            headers={"Authorization": f"Bearer {KEYS[draw.tenant]}"},
            name=f"{draw.tenant} {draw.entry}",  # locust's statistics per tenant and request kind
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif len(response.json().get("data", [])) != draw.images:
                response.failure(f"asked for {draw.images} image(s), got {len(response.json().get('data', []))}")
