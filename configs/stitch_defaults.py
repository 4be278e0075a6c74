"""Defaults of ``config.stitch`` (the ``stepwise stitch`` command; see stepwise/commands/stitch.py).

Command:  stepwise stitch --config configs/stitch_digits.py
"""
from __future__ import annotations

import ml_collections


def stitch_defaults() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    # The pair: "gmm" (exact benchmark: small = a coarse mixture, large = config.model's mixture)
    # or "checkpoints" (two trained denoisers, e.g. the small and large Flax UNets).
    s.pair = "gmm"
    s.small_components = 1            # gmm pair: the small mixture (fitted to the same digits)
    s.small_covariance = "diag"       # diag | full (a 1-component FULL Gaussian has the exact moments)
    s.small_checkpoint = ""           # checkpoints pair: training workdirs (denoisers.train.load_denoiser)
    s.large_checkpoint = ""
    s.retime = False                  # re-time a model on another schedule through log-SNR
    s.mean_tol = 0.1                  # compatibility: largest RMS difference of the data means
    # The sweep (solver, order, nfe, discretization come from the top-level config).
    s.points = 0                      # sweep points (fractions k/N); 0 = every k = 0..N
    s.num_samples = 10000             # fresh noises per point (quality and wall time)
    s.batch_size = 2000
    s.cost = "declared"               # declared | measured: the cost unit of the Pareto front
    s.cost_batch = 2000               # batch of the measured forward time
    s.cost_repeats = 3                # timed forward passes (best of) after a warm-up
    s.timing_repeats = 1              # timed repeats of each point after a warm-up run
    s.tolerance = 0.05                # "at most 5% worse" than the large model alone
    s.data_size = 16                  # checkpoints pair: digits upsampled to this size (quality reference)
    # The joint search (model column + solver decisions under a cost budget).
    s.search = True
    s.model_only = True               # also run the model-column-only search (isolates stitching's gain)
    s.objective = "frechet"           # frechet | teacher_rmse (gmm pair only)
    s.search_samples = 1000           # search noises (seed = config.seed; final points use fresh noise)
    s.generations = 6
    s.population = 12
    s.top_k = 4
    s.children = 8
    s.budgets = ""                    # comma-separated costs (relative units); empty = the sweep's costs
    s.final_seed_offset = 10007       # fresh noise of the sweep / front evaluation = seed + this
    return s
