"""Default configuration of every stepwise command: the ONE place defaults live.

Experiment files in ``configs/`` start from :func:`get_config` and override a few fields.

Command:  stepwise show-config
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

from stepwise.training.options import TrainOptions


def config_from_file(path: str | Path) -> ml_collections.ConfigDict:
    """``get_config()`` of an experiment file read by path (configs/ is not an importable package);
    experiment files extend each other with ``config_from_file(Path(__file__).with_name(...))``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: {path} is not a file")
    spec = importlib.util.spec_from_file_location(f"_stepwise_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config: {path} defines no get_config()")
    return module.get_config()

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
    c.model.kind = "digits_gmm"   # digits_gmm | digits_gmm_conditional | checkpoint | diffusers
    c.model.components = 10       # digits_gmm: mixture components (per class when conditional)
    c.model.size = 8              # digits side length (8, or 16 = 256 dims)
    c.model.covariance = "full"   # full | diag
    c.model.fit_seed = 0
    c.model.checkpoint = ""       # kind=checkpoint: a `stepwise train` run directory
    c.model.members = ""          # sample, kind=checkpoint: comma-separated run directories that a plan's model
                                  # column indexes in this order (a `stitch` front file: small,large); replaces checkpoint
    c.model.path = ""             # kind=diffusers: a local diffusers model directory or .safetensors file (torch extra)
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
    c.stitch = stitch_defaults()
    return c


def train_defaults() -> ml_collections.ConfigDict:
    """The ``train`` section: the fields and defaults of ``stepwise.training.TrainOptions``."""
    d = TrainOptions().to_dict()
    d["network_overrides"] = ml_collections.ConfigDict()   # any field of the network's constructor
    return ml_collections.ConfigDict(d)


def search_defaults() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.strategy = "predictor"          # predictor (S³-style screening) | evolution | hybrid (memetic) | gradient | dp
    s.objective = "teacher_frechet"   # teacher_frechet | teacher_rmse (paired with a reference solve) | frechet
                                      # (exact mixture) | data_frechet (S³ / AutoDiffusion: FD to the model's
                                      # training images in search.feature_net's feature space)
    s.seed = 0                        # search noise, proposals, predictor init
    s.generations = 12                # generations after the initial population
    s.population = 16                 # survivors kept per generation ((mu + lambda) selection)
    s.top_k = 6                       # parents drawn from the best top_k
    s.children = 12                   # true evaluations per generation
    s.timesteps_only_generations = 3  # first generations move only the time nodes
    s.search_samples = 1024           # noises per candidate (the teacher solves them once)
    s.batch_size = 2048               # sampler chunk (one executable per chunk shape)
    s.vmap = False                    # score a generation in chunks of stacked plans, objective on device (one call per chunk)
    s.vmap_chunk = 16                 # candidates per compiled call when vmap is on
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
    # per-step architecture (AutoDiffusion): skip masks over the network's skippable units
    s.skip = False                    # search a skip mask per step (needs a Flax UNet/MLP checkpoint)
    s.budget = 0.0                    # compute budget in full-model evaluations (0: none); with skip, masks make plans fit
    s.p_skip = 0.05                   # per step and unit, probability that a mutation flips the unit
    s.skip_schedule = "joint"         # joint | two_stage (nodes and solver first, then masks only)
    s.skip_order = "sensitivity"      # which units a candidate over budget gives up first: sensitivity (least
                                      # measured damage per cost saved) | earliest (earliest steps first)
    # predictor (strategy=predictor)
    s.screen = 128                    # proposals ranked by the predictor per generation
    s.explore = 1                     # of the children, this many are random unscreened proposals
    s.predictor_warmup = 24           # evaluations before the predictor screens
    s.predictor_hidden = 64
    s.predictor_lr = 3e-3
    s.predictor_train_steps = 200
    # learned nodes (strategy=gradient | dp): start from the best baseline by search score
    s.gradient_steps = 200            # Adam steps on the node parameters (softmax of log-SNR increments)
    s.gradient_lr = 0.05
    s.gradient_samples = 256          # training noises; as many validation noises from seed + 1
    s.gradient_learn = "nodes"        # nodes | nodes+corrections (additive corrections of the solver weights)
    s.gradient_loss = "objective"     # objective (the search objective's distance) | rmse (paired) | frechet
                                      # | features (paired RMSE in search.feature_net's feature space)
                                      # | data_frechet (objective data_frechet's distance)
    s.gradient_relax = 0.0            # LD3's relaxed target: training noises may move by <= relax * |x_T| (0: off)
    s.gradient_corrections_lr = 0.01  # Adam's rate on the weight corrections (gradient_learn=nodes+corrections)
    s.gradient_lr_schedule = "constant"  # constant | cosine (both Adam rates decay towards 0 over gradient_steps)
    s.dp_grid = 64                    # candidate nodes of the dynamic program (GITS-style)
    # hybrid (strategy=hybrid): the base strategy picks discrete columns, elites get gradient steps on
    # their nodes each generation; the final plan gets the full gradient refinement above (gradient_*)
    s.hybrid_base = "predictor"       # predictor | evolution
    s.hybrid_top = 2                  # elites refined per generation (each genome once)
    s.hybrid_steps = 10               # gradient steps per refinement
    # final comparison on fresh noise
    s.final_samples = 5000            # fresh noises of the final comparison (> search_samples)
    s.final_top_baselines = 0         # 0: every baseline; k: only the k best by search score
    s.final_seed_offset = 10007
    s.final_tuned_baselines = 8       # the k best baselines by search score also run with GITS (DP) nodes; 0: none
    s.final_extrapolation_draws = 4   # bias-extrapolated (FID_inf) distances and ratios beside the plug-in ones:
                                      # random halvings of the noise per bootstrap replicate; 0: off
    s.final_reference = True          # reference-solve the final noise (excess distance, RMSE)
    s.feature_net = ""                # model.kind=checkpoint: a domain classifier (`stepwise train-features`); the
                                      # final comparison adds the Fréchet distance in its feature space to the
                                      # held-out test images of the model's data set (never trained on);
                                      # also the feature map of gradient_loss=features and of objective
                                      # data_frechet (whose target is the training split)
    return s


def stitch_defaults() -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    # The pair: "gmm" (exact benchmark: small = a coarse mixture, large = config.model's mixture)
    # or "checkpoints" (two trained denoisers, e.g. the small and large Flax UNets).
    s.pair = "gmm"
    s.small_components = 1            # gmm pair: the small mixture (fitted to the same digits)
    s.small_covariance = "diag"       # diag | full (a 1-component FULL Gaussian has the exact moments)
    s.small_checkpoint = ""           # checkpoints pair: `stepwise train` workdirs or local diffusers models
    s.large_checkpoint = ""
    s.retime = False                  # re-time a model on another schedule through log-SNR
    s.mean_tol = 0.1                  # compatibility: largest RMS difference of the data means
    # The sweep (solver, order, nfe, discretization come from the top-level config).
    s.points = 0                      # sweep points (fractions k/N); 0 = every k = 0..N. They set the plotted
                                      # sweep and the default budgets; the budget comparison (search=True)
                                      # still runs T-Stitch at every k, so it keeps every option
    s.tstitch_presets = 8             # T-Stitch also sweeps this many best baselines (any preset, AFS included)
    s.resamples = 200                 # paired bootstrap resamples of every quality interval
    s.reference_rtol = 1e-6           # tolerance of the large model's adaptive reference ODE solves (final
                                      # noise and search teacher); looser is cheaper for large networks on CPU
    s.num_samples = 10000             # fresh noises per point (quality and wall time)
    s.batch_size = 2000
    s.cost = "declared"               # declared | measured: the cost unit of the Pareto front
    s.cost_batch = 2000               # batch of the measured forward time
    s.cost_repeats = 3                # timed forward passes (best of) after a warm-up
    s.timing_repeats = 1              # timed repeats of each point after a warm-up run
    s.tolerance = 0.05                # "at most 5% worse" than the large model alone
    s.feature_net = ""                # checkpoints pair: a domain classifier (`stepwise train-features`);
                                      # adds each point's Fréchet distance in its feature space to the
                                      # held-out test digits (models must be trained with train.split=train)
    # The joint search (model column + solver decisions under a cost budget).
    s.search = True
    s.model_only = True               # also run the model-column-only search (isolates stitching's gain)
    s.objective = "teacher_frechet"   # teacher_frechet | teacher_rmse: paired with the large model's reference solve
    s.search_samples = 1000           # search noises (seed = the search seed; final points use fresh noise)
    s.search_seeds = ""               # comma-separated search seeds (noise + proposals), each its own front;
                                      # empty = config.seed. Several: per budget, median and range over seeds
    s.tstitch_seeds = 2               # each budget's search starts from this many best T-Stitch plans (any preset)
    s.generations = 6
    s.population = 12
    s.top_k = 4
    s.children = 8
    s.budgets = ""                    # comma-separated costs (relative units); empty = the sweep's costs
    s.final_seed_offset = 10007       # fresh noise of the sweep / front evaluation = seed + this
    return s
