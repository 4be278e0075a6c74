"""Default configuration for every stepwise command.

Command:  stepwise show-config --config configs/base.py
"""
from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = ""              # empty: runs/<command>-<timestamp>
    c.distributed = False       # call jax.distributed.initialize
    c.x64 = False               # float64 everywhere (reference-grade runs)

    # The denoiser (and its noise schedule).
    c.model = ml_collections.ConfigDict()
    c.model.kind = "digits_gmm"   # digits_gmm | checkpoint
    c.model.components = 10
    c.model.size = 8
    c.model.covariance = "full"
    c.model.fit_seed = 0
    c.model.checkpoint = ""
    c.schedule = "vp_linear"

    # The sampling run: a preset solver at an NFE, or a schedule file.
    c.solver = "dpm_solver_pp"
    c.order = 2
    c.nfe = 10
    c.discretization = "logsnr"
    c.plan = ""                  # a schedule file (JSON) overrides solver/order/nfe/discretization
    c.num_samples = 4000
    c.batch_size = 2000
    c.reference_samples = 500    # noises solved with the reference ODE solver for the RMSE
    return c
