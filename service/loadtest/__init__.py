"""`diffplex loadtest`: open- and closed-loop HTTP load against a running server, from a workload file."""

from service.loadtest.arrivals import arrival_times, gaps
from service.loadtest.mix import Draw, RequestMix
from service.loadtest.stats import Sample, goodput, jain_index, percentiles, summarise
from service.loadtest.workload import Workload, WorkloadError, load_workload, parse_workload

__all__ = [
    "Draw",
    "RequestMix",
    "Sample",
    "Workload",
    "WorkloadError",
    "arrival_times",
    "gaps",
    "goodput",
    "jain_index",
    "load_workload",
    "parse_workload",
    "percentiles",
    "summarise",
]
