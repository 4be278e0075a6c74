"""Defaults of ``config.search`` (the ``stepwise search`` command; see search/run.py).

Command:  stepwise search --config configs/search_digits_gmm.py --config.nfe=5
"""
from __future__ import annotations

import ml_collections


def search_defaults() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.strategy = "predictor"          # predictor (S³-style screening) | evolution
    s.objective = "teacher_frechet"   # teacher_frechet | teacher_rmse (paired with a reference solve) | frechet
    s.seed = 0                        # search noise, proposals, predictor init
    s.generations = 12                # generations after the initial population
    s.population = 16                 # survivors kept per generation ((mu + lambda) selection)
    s.top_k = 6                       # parents drawn from the best top_k
    s.children = 12                   # true evaluations per generation
    s.timesteps_only_generations = 3  # first generations move only the time nodes
    s.search_samples = 1024           # noises per candidate (the teacher solves them once)
    s.batch_size = 2048               # sampler chunk (one executable per chunk shape)
    s.vmap = False                    # vmap candidates of a generation over stacked plans
    # search space
    s.node_space = "logsnr"           # logsnr | time: the coordinate the node increments live in
    s.min_gap = 0.004                 # smallest node increment (fraction of that coordinate's range)
    s.predictions = ""                # comma-separated names; empty = every implemented code
    s.variants = ""
    s.expansions = ""
    s.correctors = ""
    s.max_order = 3
    s.max_base = 1
    s.analytic_first = True           # may skip the model call at the first node
    s.coef_min = 0.0
    s.coef_max = 2.0
    # mutation / crossover (per candidate, per step or per node)
    s.p_crossover = 0.5
    s.p_node = 0.3
    s.node_sigma = 0.35
    s.p_decision = 0.1
    s.p_structure = 0.15
    s.coef_sigma = 0.15
    # predictor (strategy=predictor)
    s.screen = 128                    # proposals ranked by the predictor per generation
    s.explore = 1                     # of the children, this many are random unscreened proposals
    s.predictor_warmup = 24           # evaluations before the predictor screens
    s.predictor_hidden = 64
    s.predictor_lr = 3e-3
    s.predictor_train_steps = 200
    # final comparison on fresh noise
    s.final_samples = 5000            # fresh noises of the final comparison (> search_samples)
    s.final_top_baselines = 0         # 0: every baseline; k: only the k best by search score
    s.final_seed_offset = 10007
    s.final_reference = True          # reference-solve the final noise (excess distance, RMSE)
    return s
