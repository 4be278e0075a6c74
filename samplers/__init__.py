"""Samplers: how a plan runs (the jitted executor) and the diffrax reference solve."""
from samplers.executor import sample, trace_count
from samplers.reference import reference_solve

__all__ = ["sample", "trace_count", "reference_solve"]
