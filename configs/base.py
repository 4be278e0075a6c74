"""Default configuration for every stepwise command.

Command:  stepwise show-config --config configs/base.py
"""
from __future__ import annotations

import ml_collections

from configs.search_defaults import search_defaults
from configs.train_defaults import train_defaults


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = ""              # empty: --workdir or runs/<command>-<timestamp>
    c.distributed = False       # call jax.distributed.initialize (multi-host)
    c.coordinator = ""          # host:port of process 0 (default: $JAX_COORDINATOR_ADDRESS)
    c.num_processes = 0         # default: $JAX_NUM_PROCESSES
    c.process_id = -1           # default: $JAX_PROCESS_ID
    c.x64 = False               # float64 everywhere (reference-grade runs)
    c.progress = True           # progress bars (quiet anyway when stdout is not a terminal)

    # The denoiser (and its noise schedule).
    c.model = ml_collections.ConfigDict()
    c.model.kind = "digits_gmm"   # digits_gmm | digits_gmm_conditional | checkpoint
    c.model.components = 10       # digits_gmm: mixture components (per class when conditional)
    c.model.size = 8              # digits side length (8, or 16 = 256 dims)
    c.model.covariance = "full"   # full | diag
    c.model.fit_seed = 0
    c.model.checkpoint = ""       # kind=checkpoint: a `stepwise train` run directory
    c.model.precision = "float32"  # float32 | bfloat16 (model evaluation; solver state stays float32)
    c.schedule = "vp_linear"      # vp_linear | vp_cosine | vp_discrete | edm | flow

    # The sampling run: a preset solver at an NFE, or a schedule file.
    c.solver = "dpm_solver_pp"
    c.order = 2
    c.nfe = 10
    c.discretization = "logsnr"   # time_uniform | time_quadratic | logsnr | karras
    c.plan = ""                   # a schedule file (JSON) overrides solver/order/nfe/discretization
    c.num_samples = 4000
    c.batch_size = 2000
    c.reference_samples = 500     # noises solved with the reference ODE solver for the RMSE
    c.save_samples = True         # write samples.npz (statistics are always streamed per batch)

    # Guidance (class-conditional models): labels cycle over classes unless `label` >= 0.
    c.guidance = 1.0              # classifier-free guidance scale (1 = conditional model alone)
    c.label = -1
    c.threshold = "none"          # none | static | dynamic
    c.threshold_ratio = 0.995
    c.threshold_max = 1.0

    c.train = train_defaults()
    c.search = search_defaults()
    try:  # the stitching section (configs/stitch_defaults.py)
        from configs.stitch_defaults import stitch_defaults
        c.stitch = stitch_defaults()
    except ImportError:
        pass
    return c
