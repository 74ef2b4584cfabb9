"""API fuzzing: schemathesis generates requests from the running service's own OpenAPI schema
(`/openapi.json` of a real `diffplex serve`), authenticated as a real tenant, and checks every answer:
no 5xx, a documented status code, a documented content type, a body matching the documented schema.

Both valid (positive) and invalid (negative) requests are generated for every operation. Steps and images
per request are capped on the shared server (conftest.SHARED_ENV) so a generated generation stays cheap.
"""

from __future__ import annotations

import os
from collections import Counter
from unittest import SkipTest

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service.api.server import Server
from tests.service.reliability.conftest import new_tenant
from tests.service.reliability.figures import record

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEGATIVE_CHECKS = [*CHECKS, negative_data_rejection]  # an invalid request must be refused with a 4xx
SHORT_CASES_PER_OPERATION = 3  # x 2 modes x 18 operations: at most ~100 requests, well under a minute
SLOW_MIN_CASES = 1000


def _checker(
    operation: object,
    mode: GenerationMode,
    checks: list,
    headers: dict,
    tried: Counter[str],
    cases: int,
    derandomize: bool,
) -> object:
    """A hypothesis test for one operation and mode (a factory, so each closure keeps its own checks)."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as generated
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        tried[case.operation.label] += 1
        case.call_and_validate(headers=headers, checks=checks, timeout=60)

    return check


def fuzz(server: Server, cases_per_operation: int, derandomize: bool) -> Counter[str]:
    """Generate and check cases for every operation in both modes; returns cases tried per operation."""
    headers = {"Authorization": f"Bearer {new_tenant(server, 'fuzzer')[1]}"}
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    tried: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, checks in ((GenerationMode.POSITIVE, CHECKS), (GenerationMode.NEGATIVE, NEGATIVE_CHECKS)):
            check = _checker(operation, mode, checks, headers, tried, cases_per_operation, derandomize)
            try:
                check()
            except (Unsatisfiable, SkipTest):
                if mode is GenerationMode.POSITIVE:
                    raise  # an operation without parameters or body has no invalid request to make
    return tried


def test_short_fuzz_finds_no_5xx_and_no_undocumented_answer(shared_server: Server) -> None:
    tried = fuzz(shared_server, SHORT_CASES_PER_OPERATION, derandomize=True)
    assert len(tried) >= 15, sorted(tried)  # every route of the API was exercised
    record("api_fuzz_short", cases=sum(tried.values()), operations=len(tried))


@pytest.mark.slow
def test_fuzz_at_least_1000_cases(shared_server: Server) -> None:
    per_operation = int(os.environ.get("DIFFPLEX_FUZZ_CASES_PER_OPERATION", "150"))
    tried = fuzz(shared_server, per_operation, derandomize=False)
    total = sum(tried.values())
    record("api_fuzz", cases=total, operations=len(tried), per_operation=dict(sorted(tried.items())))
    assert total >= SLOW_MIN_CASES, tried
