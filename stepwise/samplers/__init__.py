"""Samplers: how a plan runs (the jitted executor), chunked runs and the diffrax reference solve."""
from stepwise.samplers.clock import CompileClock
from stepwise.samplers.executor import NonFiniteError, chunked, sample, trace_count
from stepwise.samplers.reference import reference_solve, reference_trajectory

__all__ = ["CompileClock", "NonFiniteError", "sample", "chunked", "trace_count", "reference_solve", "reference_trajectory"]
