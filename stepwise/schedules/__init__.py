"""Noise schedules and time discretizations.

A noise schedule defines the forward process ``x_t = alpha(t) x_0 + sigma(t) eps`` and its
half log-SNR ``lambda(t) = log alpha(t) - log sigma(t)`` (Lu et al., DPM-Solver, 2022).
"""
from stepwise.schedules.base import NoiseSchedule, EDM, Flow, VPCosine, VPDiscrete, VPLinear
from stepwise.schedules.discretize import DISCRETIZATIONS, discretize, validate_ts
from stepwise.schedules.export import to_diffusers_timesteps, to_k_diffusion_sigmas, to_sigmas

__all__ = [
    "NoiseSchedule", "VPLinear", "VPCosine", "VPDiscrete", "EDM", "Flow",
    "discretize", "validate_ts", "DISCRETIZATIONS", "by_name", "to_sigmas",
    "to_k_diffusion_sigmas", "to_diffusers_timesteps",
]


def by_name(name: str, **kwargs) -> NoiseSchedule:
    """Build a schedule from its name (config edge only)."""
    table = {"vp_linear": VPLinear, "vp_cosine": VPCosine, "edm": EDM, "flow": Flow,
             "vp_discrete": VPDiscrete.ddpm_linear}
    if name not in table:
        raise ValueError(f"schedule: unknown name {name!r}; allowed: {sorted(table)}")
    return table[name](**kwargs)
