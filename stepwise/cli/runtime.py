"""Shared command-line plumbing: configs with overrides, run directories, atomic writes, builders."""
from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import numpy as np

from stepwise.io import jsonable, lock_directory, remove_leftovers, write_json_atomic

BASE_CONFIG = str(Path(__file__).resolve().with_name("defaults.py"))


def config_parser(sub, name: str, help: str, example: str, workdir_help: str | None = None,
                  workdir: bool = True, **kw):
    """A sub-command parser taking ``--config FILE`` (and ``--workdir DIR`` when ``workdir``), with
    ``example`` shown under ``--help``."""
    import argparse

    p = sub.add_parser(name, help=help, epilog=example, formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    p.add_argument("--config", default=None, help="ml_collections config file (default: the built-in defaults, stepwise/cli/defaults.py)")
    if workdir:
        p.add_argument("--workdir", default=None,
                       help=workdir_help or f"run directory (default runs/{name}-<timestamp>)")
    return p


def load_config(path: str | None, overrides: list[str]):
    """Resolve an ml_collections config file plus ``--config.a.b=value`` overrides.

    Unknown fields and values of the wrong type raise before any work starts, naming the field.
    """
    from absl import flags
    from ml_collections import config_flags

    import sys

    bad = [o for o in overrides if not o.startswith("--config.")]
    if bad:
        raise SystemExit(f"error: unrecognized arguments {bad}; config overrides look like --config.nfe=5")
    argv = ["stepwise"] + ([f"--config={path}"] if path else []) + list(overrides)
    saved, sys.argv = sys.argv, argv  # config_flags also reads sys.argv when the flag is defined
    try:
        fv = flags.FlagValues()
        config_flags.DEFINE_config_file("config", default=path or BASE_CONFIG, flag_values=fv,
                                        lock_config=True)
        fv(argv)
        return fv.config
    except (flags.Error, KeyError, AttributeError, TypeError, ValueError) as e:
        msg = str(e).strip("\"'")
        raise SystemExit(f"error: bad config or override ({msg}); "
                         "see `stepwise show-config` for the fields") from None
    finally:
        sys.argv = saved


def make_workdir(command: str, workdir: str | None) -> Path:
    """The run directory: ``--workdir`` or runs/<command>-<timestamp>; existing ones are reused."""
    if not workdir:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        workdir = os.path.join("runs", f"{command}-{stamp}")
    p = Path(workdir).resolve()
    if p.exists() and not p.is_dir():
        raise ValueError(f"workdir: {p} is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        lock_directory(p)                 # one run per directory; a dead holder's lock is taken over
    except PermissionError:
        raise ValueError(f"workdir: {p} is not writable") from None
    remove_leftovers(p)                   # temporary files of a killed writer
    return p


def save_config(workdir: Path, config) -> None:
    """Record the resolved config; an existing run directory must hold the same config.

    A run directory is resumed, never clobbered: rerunning with the same config continues (or
    finds the work done), a different config is refused before anything is written.
    """
    path = workdir / "config.json"
    new = json.loads(json.dumps(config.to_dict(), default=jsonable))
    if path.exists() and not _holds_results(workdir):
        path.unlink()        # a run that stopped before writing anything (e.g. a bad value): not a run to keep
    if path.exists():
        old = json.loads(path.read_text())
        if _results_fields(old) != _results_fields(new):
            a, b = _results_fields(old), _results_fields(new)
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise SystemExit(f"error: {workdir} holds a run with a different config (fields {diff}); "
                             "choose another --workdir or rerun with the same config to resume")
        return
    write_json_atomic(path, new)


def _holds_results(workdir: Path) -> bool:
    """Whether a run directory holds anything but its config and lock (results, checkpoints, logs)."""
    from stepwise.io import LOCK_NAME
    return any(p.name not in ("config.json", LOCK_NAME) for p in workdir.iterdir())


COSMETIC_FIELDS = ("progress", "workdir")   # fields that do not change results


def _results_fields(config: dict) -> dict:
    """The config fields that change results (the ones a resumed run must share)."""
    return {k: v for k, v in config.items() if k not in COSMETIC_FIELDS}


def finished_metrics(workdir: Path) -> dict | None:
    """The metrics of a completed run in ``workdir`` (None if it has not finished)."""
    path = workdir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def build_schedule(config):
    from stepwise import schedules
    return schedules.by_name(config.schedule)


def _is_diffusers(path: str) -> bool:
    """A .safetensors file, a pipeline directory, or a directory whose config.json names a class."""
    import os

    if path.endswith(".safetensors") or os.path.exists(os.path.join(path, "model_index.json")):
        return True
    cfg = os.path.join(path, "config.json")
    try:
        return os.path.isfile(cfg) and "_class_name" in json.loads(Path(cfg).read_text())
    except (OSError, ValueError):
        return False


def load_model_path(path: str, diffusers: bool | None = None):
    """The denoiser stored at ``path``: a `stepwise train` run directory, or a local diffusers model
    (a ``save_pretrained`` directory or a ``.safetensors`` file, run through the PyTorch bridge)."""
    if not os.path.exists(path):
        raise SystemExit(f"error: model path {path} does not exist")
    if not (_is_diffusers(path) if diffusers is None else diffusers):
        from stepwise.training import load_denoiser
        return load_denoiser(path)
    try:
        from stepwise.denoisers.torch_bridge import load_diffusers
    except ImportError as e:
        raise SystemExit(f"error: {path} is a diffusers model; {e}") from None
    return load_diffusers(path)


def held_out_data(feature_net: str, models: dict[str, str], field: str):
    """The test split of the data set the models in ``models`` (config field -> `stepwise train`
    run directory) were trained on, in ``feature_net``'s feature space (a
    :class:`search.protocol.FeatureMoments`): the data-feature Fréchet distance of the final protocol.

    Refused by name unless every model's model.json records a training split that leaves a test
    split out (digits: ``train.split=train``; Fashion-MNIST: always its train split), all on the
    same data set. ``field`` names the feature-net field in errors."""
    return split_features(feature_net, models, field, "test")


def training_data(feature_net: str, models: dict[str, str], field: str):
    """The same as :func:`held_out_data` of the TRAINING split (the images the models learned
    from): the target of the ``data_frechet`` search objective, which so never sees the test split
    the final comparison judges it on."""
    return split_features(feature_net, models, field, "train")


def split_features(feature_net: str, models: dict[str, str], field: str, split: str):
    """:class:`search.protocol.FeatureMoments` of ``split`` ("train" | "test") of the models' data set
    (see :func:`held_out_data` for the checks)."""
    from stepwise.data import load_digits, load_fashion_mnist
    from stepwise.evaluation import feature_net_extractor, load_feature_net
    from stepwise.search import protocol
    from stepwise.training import trained_on
    from stepwise.training.options import HELD_OUT_SPLITS

    records = {}
    for key, path in models.items():
        rec = trained_on(path) if path and os.path.exists(path) else None
        if rec not in HELD_OUT_SPLITS:
            raise SystemExit(f"error: {key}={path!r} records training data {rec}; {field} scores on a held-out "
                             f"test split, so the model must be a `stepwise train` run with train.dataset=digits "
                             f"and train.split=train, or train.dataset=fashion_mnist")
        records[key] = rec[0]
    if len(set(records.values())) != 1:
        raise SystemExit(f"error: {field}: the models trained on different data sets {records}")
    try:
        net = load_feature_net(feature_net)
    except (FileNotFoundError, OSError, ValueError, KeyError) as e:
        raise SystemExit(f"error: {field}={feature_net!r}: {e}") from None
    dataset, size = next(iter(records.values())), int(net.image_shape[0])
    if dataset == "digits":
        images = load_digits(size, split=split)[0][..., 0]
    else:
        if size not in (28, 32):
            raise SystemExit(f"error: {field} takes {size}x{size} images; Fashion-MNIST is 28x28 or 32x32")
        images = load_fashion_mnist(split, pad_to_32=size == 32)[0]
    which = f"held-out {dataset} test" if split == "test" else f"{dataset} training"
    return protocol.feature_moments(feature_net_extractor(net), images,
                                    f"domain-CNN Fréchet distance to the {len(images)} {which} images")


def check_schedule(model, config):
    """``model`` if it was trained on ``config.schedule``, else a named error."""
    from stepwise import schedules
    want = schedules.by_name(config.schedule).describe()
    if model.schedule.describe() != want:
        raise SystemExit(f"error: the model was trained with {model.schedule.describe()}, "
                         f"but config.schedule={config.schedule!r}; set config.schedule to match")
    return model


def build_model(config, schedule):
    """The denoiser named by ``config.model`` bound to ``schedule``."""
    from stepwise import denoisers

    kind = config.model.kind
    if kind == "digits_gmm":
        model = denoisers.digits_gmm(components=config.model.components, size=config.model.size,
                                     seed=config.model.fit_seed, schedule=schedule,
                                     covariance=config.model.covariance)
    elif kind == "digits_gmm_conditional":
        model = denoisers.digits_gmm_conditional(components_per_class=config.model.components,
                                                 size=config.model.size, seed=config.model.fit_seed,
                                                 schedule=schedule)
    elif kind == "checkpoint":
        if not config.model.checkpoint:
            raise SystemExit("error: config.model.checkpoint must name a `stepwise train` run directory")
        model = check_schedule(load_model_path(config.model.checkpoint), config)
    elif kind == "diffusers":
        if not config.model.path:
            raise SystemExit("error: config.model.path must name a local diffusers model directory or .safetensors file")
        if not os.path.exists(config.model.path):
            raise SystemExit(f"error: config.model.path={config.model.path!r} does not exist")
        model = check_schedule(load_model_path(config.model.path, diffusers=True), config)
    else:
        raise SystemExit(f"error: config.model.kind={kind!r} is not supported; allowed: {list(MODEL_KINDS)}")
    return _with_precision(model, config)


def _with_precision(model, config):
    from stepwise import denoisers
    if config.model.precision not in PRECISIONS:
        raise SystemExit(f"error: config.model.precision={config.model.precision!r}; allowed: {list(PRECISIONS)}")
    return denoisers.LowPrecision(model, "bfloat16") if config.model.precision == "bfloat16" else model


def member_paths(config) -> list[str]:
    """``config.model.members`` as a list of run directories (empty when unset)."""
    return [p.strip() for p in str(config.model.get("members", "")).split(",") if p.strip()]


def check_members(config) -> None:
    """``config.model.members``: only with kind=checkpoint and no ``model.checkpoint``, each an existing path."""
    paths = member_paths(config)
    if not paths:
        return
    if config.model.kind != "checkpoint" or config.model.checkpoint:
        raise SystemExit(f"error: config.model.members needs config.model.kind='checkpoint' and an empty "
                         f"config.model.checkpoint (the members replace it); got kind={config.model.kind!r}, "
                         f"checkpoint={config.model.checkpoint!r}")
    for p in paths:
        if not os.path.exists(p):
            raise SystemExit(f"error: config.model.members: {p!r} does not exist")


def build_denoisers(config, schedule):
    """(the first model, what the sampler runs). With ``config.model.members`` (kind=checkpoint:
    ``stepwise train`` run directories, e.g. ``small,large`` for a `stepwise stitch` front file) a
    :class:`denoisers.DenoiserSet` in that order, which a plan's ``model`` column indexes; else the
    config's one model (:func:`build_model`) for both."""
    from stepwise import denoisers
    paths = member_paths(config)
    if not paths:
        model = build_model(config, schedule)
        return model, model
    models = [_with_precision(check_schedule(load_model_path(p), config), config) for p in paths]
    try:
        return models[0], (models[0] if len(models) == 1 else denoisers.DenoiserSet(models, schedule))
    except ValueError as e:
        raise SystemExit(f"error: config.model.members: {e}") from None


MODEL_KINDS = ("digits_gmm", "digits_gmm_conditional", "checkpoint", "diffusers")
PRECISIONS = ("float32", "bfloat16")


KNOWN_CLASSES = {"digits_gmm_conditional": 10}   # model kinds whose class count is known before fitting


def check_sampling_config(config):
    """Every cheap check of a sampling config, before a run directory or a model exists: the
    schedule, the plan (preset at an NFE, or a schedule file in the schedule's domain), model kind
    and precision, guidance, thresholding, sample counts. Returns (schedule, plan)."""
    import math

    from stepwise import denoisers
    if config.model.kind not in MODEL_KINDS:
        raise SystemExit(f"error: config.model.kind={config.model.kind!r} is not supported; allowed: {list(MODEL_KINDS)}")
    if config.model.precision not in PRECISIONS:
        raise SystemExit(f"error: config.model.precision={config.model.precision!r}; allowed: {list(PRECISIONS)}")
    if not (math.isfinite(config.guidance) and config.guidance >= 0):
        raise SystemExit(f"error: config.guidance={config.guidance!r}; allowed: a finite scale >= 0 "
                         "(1 = the conditional model alone, 0 = unconditional)")
    denoisers.Thresholding(config.threshold, config.threshold_ratio, config.threshold_max)  # names the bad field
    classes = KNOWN_CLASSES.get(config.model.kind)
    if classes is not None and config.label >= classes:    # before the mixture is fitted (checkpoints: later)
        raise SystemExit(f"error: config.label={config.label}; allowed: -1 (all classes) or 0..{classes - 1}")
    if int(config.num_samples) < 2 or int(config.batch_size) < 1:
        raise SystemExit(f"error: config.num_samples={config.num_samples}, config.batch_size={config.batch_size}; "
                         "allowed: num_samples >= 2 and batch_size >= 1")
    schedule = build_schedule(config)
    plan = build_plan(config, schedule)
    check_members(config)
    used, given = int(np.max(np.asarray(plan.model), initial=0)) + 1, max(len(member_paths(config)), 1)
    if used > given:
        raise SystemExit(f"error: config.plan runs {used} models (its model column) but {given} "
                         f"{'is' if given == 1 else 'are'} given; allowed: config.model.kind='checkpoint' with "
                         f"config.model.members naming {used} run directories in the plan's model order")
    return schedule, plan


def build_guidance(config, model, n: int, seed_key):
    """(labels or None, threshold or None) for a sampling run; labels cycle over the classes."""
    import jax.numpy as jnp

    from stepwise import denoisers
    threshold = None
    if config.threshold != "none":
        threshold = denoisers.Thresholding(config.threshold, config.threshold_ratio, config.threshold_max)
    classes = getattr(model, "num_classes", 0)
    if not classes:
        if config.guidance != 1.0 or config.label >= 0:
            raise SystemExit("error: config.guidance/config.label need a class-conditional model "
                             "(config.model.kind=digits_gmm_conditional or a conditional checkpoint)")
        return None, threshold
    if config.label >= classes:
        raise SystemExit(f"error: config.label={config.label}; allowed: -1 (all classes) or 0..{classes - 1}")
    labels = jnp.full((n,), config.label) if config.label >= 0 else jnp.arange(n) % classes
    return labels, threshold


def build_plan(config, schedule):
    """A preset at ``config.nfe`` on ``config.discretization`` (or a schedule file, ``config.plan``)."""
    from stepwise import solvers

    if config.plan:
        from stepwise.search.schedule_file import load_plan
        return load_plan(config.plan, schedule)
    p = solvers.preset(config.solver)
    opts = {"order": config.order} if "order" in p.options else {}
    return solvers.build_preset(config.solver, config.nfe, schedule, config.discretization, **opts)


def progress(iterable, desc: str, enabled: bool = True, total: int | None = None):
    """A tqdm progress bar that stays quiet when stderr is not a terminal."""
    import sys

    from tqdm.auto import tqdm
    return tqdm(iterable, desc=desc, total=total, disable=(not enabled) or not sys.stderr.isatty(),
                leave=False)


def init_distributed(config) -> None:
    """``jax.distributed.initialize`` from config fields or the usual environment variables.

    On CPU hosts the cross-process collectives use gloo.
    """
    import os

    import jax

    if not config.distributed:
        return
    addr = config.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    nproc = config.num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0") or 0)
    pid = config.process_id if config.process_id >= 0 else int(os.environ.get("JAX_PROCESS_ID", "-1"))
    kwargs = {}
    if addr:
        if nproc < 1 or pid < 0:
            raise SystemExit("error: config.distributed with a coordinator needs config.num_processes "
                             "and config.process_id (or JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
        kwargs = dict(coordinator_address=addr, num_processes=nproc, process_id=pid)
    # Cross-process collectives of CPU devices (no effect on accelerators). Setting it must not
    # touch the backend: initialize() has to come before any device query.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)  # without arguments: cluster auto-detection (SLURM, TPU pods)


def is_writer() -> bool:
    """Only process 0 writes files in a multi-host run."""
    import jax
    return jax.process_index() == 0


def gather_hosts(x: np.ndarray) -> np.ndarray:
    """Concatenate each process's rows (identity on one process)."""
    import jax

    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils
    g = multihost_utils.process_allgather(np.asarray(x))
    return np.asarray(g).reshape((-1,) + np.asarray(x).shape[1:])
