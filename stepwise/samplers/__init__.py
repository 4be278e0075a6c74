"""Samplers: how a plan runs (the jitted executor), chunked runs and the diffrax reference solve."""
from stepwise.samplers.executor import chunked, sample, trace_count
from stepwise.samplers.reference import reference_solve

__all__ = ["sample", "chunked", "trace_count", "reference_solve"]
