"""Training Flax denoisers on in-memory arrays, with resumable orbax checkpoints.

* optax AdamW with linear warm-up then cosine decay, global-norm clipping, and an EMA of the weights;
* the loss is the squared error of the chosen parameterisation (eps | x0 | v | score | flow) with a weight
  that makes it comparable across parameterisations (``loss_weight``);
* t is drawn uniformly on the schedule's domain [t_min, t_max] (``t_sampling="uniform"``) or uniformly
  in log-SNR (``"logsnr"``, useful for EDM's long sigma range);
* every random draw of step ``n`` comes from ``fold_in(key(seed), n)`` and the minibatch is drawn inside
  the jitted step from that key, so a run resumed from a checkpoint takes exactly the steps an
  uninterrupted run takes;
* the batch is sharded over ``jax.devices()`` along a 1-D mesh axis ``"data"`` (parameters replicated);
* checkpoints: ``<workdir>/checkpoints`` (latest ``keep`` full training states, for resuming) and
  ``<workdir>/best`` (EMA weights with the lowest held-out loss); ``<workdir>/model.json`` and
  ``<workdir>/data_mean.npy`` describe the network, so ``load_denoiser(workdir)`` rebuilds it;
* metrics go to ``<workdir>/metrics.jsonl`` (and TensorBoard through clu when TensorFlow imports).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from stepwise import data, schedules
from stepwise.denoisers.gmm import digits_gmm
from stepwise.training.options import TrainOptions
from stepwise.denoisers.base import check_prediction, from_x0_eps, to_x0_eps
from stepwise.denoisers.mlp import mlp_kwargs
from stepwise.denoisers.unet import FlaxDenoiser, unet_kwargs, build_network, forward_flops, forward_seconds, init_params

MODEL_JSON = "model.json"
EXPORT_NPZ = "ema_params.npz"      # orbax-free copy of the EMA weights (see export_params)


# ----------------------------------------------------------------------------------------------- metrics
class JsonlWriter:
    """A metric writer with clu's ``write_scalars(step, scalars)`` interface, one JSON object per line."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._f = open(path, "a", encoding="utf-8", buffering=1)   # line-buffered: readable while training

    def write_scalars(self, step: int, scalars: dict):
        rec = {"step": int(step), "time": time.time()}
        rec.update({k: float(v) for k, v in scalars.items()})
        self._f.write(json.dumps(rec) + "\n")

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()


class MultiWriter:
    def __init__(self, writers):
        self.writers = list(writers)

    def write_scalars(self, step, scalars):
        for w in self.writers:
            w.write_scalars(step, scalars)

    def flush(self):
        for w in self.writers:
            w.flush()

    def close(self):
        for w in self.writers:
            w.close()


def make_writer(workdir: str, tensorboard: bool = False):
    """JSONL writer, plus clu's TensorBoard writer when asked for and TensorFlow imports."""
    writers = [JsonlWriter(os.path.join(workdir, "metrics.jsonl"))]
    if tensorboard:
        try:
            import tensorflow  # noqa: F401  (clu.metric_writers needs it at import)
            from clu import metric_writers
            writers.append(metric_writers.SummaryWriter(os.path.join(workdir, "tensorboard")))
        except ImportError:
            print("train: TensorBoard requested but TensorFlow is not installed; writing JSONL only",
                  file=sys.stderr)
    return MultiWriter(writers)


# ------------------------------------------------------------------------------------------------ losses
def sample_t(key, n: int, schedule, how: str = "uniform"):
    """n times on the schedule's domain: uniform in t, or uniform in half log-SNR."""
    lo, hi = float(schedule.t_min), float(schedule.t_max)
    u = jax.random.uniform(key, (n,), jnp.float32)
    if how == "uniform":
        return lo + (hi - lo) * u
    if how == "logsnr":
        l_hi, l_lo = schedule.lambda_(jnp.float32(lo)), schedule.lambda_(jnp.float32(hi))
        return jnp.clip(schedule.t_of_lambda(l_lo + (l_hi - l_lo) * u), lo, hi)
    raise ValueError(f"t_sampling: unknown {how!r}; allowed: ['uniform', 'logsnr']")


def loss_weight(kind: str, t, schedule, how: str = "auto", gamma: float = 5.0):
    """Per-sample weight of the squared error of a ``kind`` prediction.

    ``"eps"``: weight J^2 with J = d eps / d pred, i.e. the loss equals the eps-MSE of the implied
    noise estimate (Ho et al. 2020) for every parameterisation; ``"min_snr"``: that times
    min(SNR, gamma)/SNR (Hang et al. 2023); ``"uniform"``: 1; ``"auto"``: ``"min_snr"`` for x0 (whose
    eps-equivalent weight SNR is unbounded), ``"uniform"`` for v (the plain v-MSE of Salimans & Ho
    2022, SNR + 1 in eps terms: it keeps the x0 estimate accurate at high noise, which the eps
    weight alpha^2 does not; benchmarks/RESULTS_denoisers.md) and ``"eps"`` otherwise.
    """
    if how == "auto":
        how = {"x0": "min_snr", "v": "uniform"}.get(kind, "eps")
    if how == "uniform":
        return jnp.ones_like(t)
    z = jnp.zeros((t.shape[0], 1), t.dtype)
    jac = to_x0_eps(jnp.ones_like(z), kind, z, t, schedule)[1][:, 0]   # eps is affine in pred
    w = jac**2
    if how == "eps":
        return w
    if how == "min_snr":
        snr = jnp.exp(2.0 * schedule.lambda_(t))
        return w * jnp.minimum(snr, gamma) / snr
    raise ValueError(f"loss_weighting: unknown {how!r}; allowed: ['auto', 'eps', 'min_snr', 'uniform']")


def diffusion_loss(model: FlaxDenoiser, x0, labels, key, cfg) -> jnp.ndarray:
    """Weighted denoising loss of ``model`` on clean data x0 (B, *data_shape)."""
    kt, ke, kc = jax.random.split(key, 3)
    sched = model.schedule
    b = x0.shape[0]
    t = sample_t(kt, b, sched, cfg.t_sampling)
    eps = jax.random.normal(ke, x0.shape, x0.dtype)
    shp = (b,) + (1,) * (x0.ndim - 1)
    xt = sched.alpha(t).reshape(shp) * x0 + sched.sigma(t).reshape(shp) * eps
    if model.null_class is not None:
        drop = jax.random.bernoulli(kc, cfg.p_uncond, (b,))
        labels = jnp.where(drop, model.null_class, labels)
    pred = model(xt, t, labels)
    target = from_x0_eps(x0, eps, model.prediction, xt, t, sched)
    per = jnp.mean((pred - target) ** 2, axis=tuple(range(1, x0.ndim)))
    return jnp.mean(loss_weight(model.prediction, t, sched, cfg.loss_weighting) * per)


# ------------------------------------------------------------------------------------------------- data
def load_training_data(cfg: TrainOptions) -> tuple[np.ndarray, np.ndarray | None]:
    """The training arrays named by ``cfg.dataset``: (data in [-1, 1], labels or None)."""
    kind = cfg.dataset
    if kind == "digits":
        x, y = data.load_digits(int(cfg.image_size), split=cfg.split)
    elif kind == "fashion_mnist":
        if int(cfg.image_size) not in (28, 32):
            raise ValueError(f"train.image_size: {cfg.image_size} is invalid for fashion_mnist; allowed: 28, 32")
        x, y = data.load_fashion_mnist("train", cfg.data_path or None, pad_to_32=int(cfg.image_size) == 32)
        x = x[..., None]
    elif kind == "npz":
        x, y = data.load_npz(cfg.data_path)
    elif kind == "folder":
        x, y = data.load_image_folder(cfg.data_path), None
    else:  # gmm_samples: exact samples of the digits mixture
        g = digits_gmm(size=int(cfg.image_size))
        x = np.asarray(g.sample(jax.random.key(int(cfg.seed)), 4096), np.float32)
        x, y = x.reshape(-1, cfg.image_size, cfg.image_size, 1), None
    return (data.flatten(x) if cfg.flat else x), y


# ------------------------------------------------------------------------------------------------- setup
def network_spec(cfg, data_shape, num_classes: int) -> dict:
    """The JSON-able description of the network (written to model.json)."""

    over = dict(cfg.network_overrides or {})
    ncls = num_classes + 1 if num_classes else None
    if cfg.arch == "unet":
        if len(data_shape) != 3:
            raise ValueError(f"train: the UNet needs images (H, W, C); got data shape {data_shape}")
        kw = unet_kwargs(cfg.preset, out_channels=int(data_shape[-1]), num_class_embeds=ncls, **over)
    elif cfg.arch == "mlp":
        if len(data_shape) != 1:
            raise ValueError(f"train: the MLP needs flat vectors (d,); got data shape {data_shape}")
        kw = mlp_kwargs(cfg.preset, out_dim=int(data_shape[0]), num_class_embeds=ncls, **over)
    else:
        raise ValueError(f"train: unknown arch {cfg.arch!r}; allowed: ['unet', 'mlp']")
    kw = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}
    return {"arch": cfg.arch, "network": kw}


def denoiser_from_spec(spec: dict, params, data_mean=None) -> FlaxDenoiser:
    module = build_network(spec["arch"], spec["network"])
    schedule = schedules.by_name(spec["schedule"], **spec.get("schedule_kwargs", {}))
    return FlaxDenoiser(module, params, spec["prediction"], schedule, tuple(spec["data_shape"]),
                        cost=spec.get("cost", 1.0), data_mean=data_mean,
                        time_input=tuple(spec["time_input"]), scale_input=spec["scale_input"],
                        sigma_data=spec["sigma_data"], null_class=spec.get("null_class"))


def _optimizer(cfg):
    steps = max(int(cfg.steps), int(cfg.warmup_steps) + 1)
    lr = optax.warmup_cosine_decay_schedule(0.0, cfg.learning_rate, int(cfg.warmup_steps), steps,
                                            end_value=cfg.learning_rate * cfg.final_lr_fraction)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(lr, b1=0.9, b2=0.999, weight_decay=cfg.weight_decay))


def _managers(workdir: str, keep: int):
    import orbax.checkpoint as ocp

    latest = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"),
                                   options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    best = ocp.CheckpointManager(os.path.join(workdir, "best"),
                                 options=ocp.CheckpointManagerOptions(
                                     max_to_keep=1, create=True, best_fn=lambda m: m["eval_loss"],
                                     best_mode="min"))
    return latest, best


@dataclasses.dataclass
class TrainResult:
    denoiser: FlaxDenoiser       # EMA weights at the last step
    step: int
    last_loss: float
    eval_loss: float
    seconds: float               # wall time of this call's steps (excluding setup and compilation)
    workdir: str


def train(data, cfg: TrainOptions, workdir: str, labels=None, schedule: str = "vp_linear",
          schedule_kwargs: dict | None = None, stop_after: int | None = None) -> TrainResult:
    """Train (or resume) a denoiser on ``data`` (n, *data_shape) in [-1, 1] for ``cfg.steps`` steps.

    ``cfg`` is a :class:`TrainOptions` (the CLI builds it from ``config.train``). If ``workdir`` holds a
    checkpoint, training resumes from its latest step. ``stop_after`` ends this call after that many
    steps (the run can be resumed later), and so does ``cfg.max_minutes`` of wall time (0: no limit;
    setup and compilation included) with a checkpoint at the last step. ``labels`` (n,) ints enable
    class conditioning when ``cfg.num_classes > 0``.
    """
    import orbax.checkpoint as ocp
    from tqdm.auto import tqdm

    if not isinstance(cfg, TrainOptions):
        raise TypeError(f"train: options must be a stepwise.training.TrainOptions, got {type(cfg).__name__}")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    check_prediction(cfg.prediction)
    data = np.asarray(data, np.float32)
    data_shape = tuple(data.shape[1:])
    num_classes = int(cfg.num_classes)
    if num_classes:
        if labels is None:
            raise ValueError("train: cfg.num_classes > 0 needs labels")
        labels = np.asarray(labels, np.int32)
        if labels.shape != data.shape[:1] or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"train: labels must be (n,) ints in [0, {num_classes})")
    else:
        labels = np.zeros(data.shape[:1], np.int32)

    n_dev = len(jax.devices())
    if cfg.batch_size % n_dev:
        raise ValueError(f"train: batch_size {cfg.batch_size} is not divisible by {n_dev} devices")
    mesh = jax.make_mesh((n_dev,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    repl, shard = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    # Held-out split for the best-checkpoint metric (deterministic).
    n_eval = min(int(cfg.eval_examples), max(len(data) // 10, 1))
    perm = np.random.default_rng(cfg.seed).permutation(len(data))
    ev_idx, tr_idx = perm[:n_eval], perm[n_eval:] if len(data) > n_eval else perm
    train_x, train_y = jax.device_put(data[tr_idx], repl), jax.device_put(labels[tr_idx], repl)
    eval_x, eval_y = jax.device_put(data[ev_idx], repl), jax.device_put(labels[ev_idx], repl)

    spec = network_spec(cfg, data_shape, num_classes)
    spec.update(prediction=cfg.prediction, schedule=schedule, schedule_kwargs=dict(schedule_kwargs or {}),
                data_shape=list(data_shape), time_input=[cfg.time_input_kind, float(cfg.time_input_scale),
                                                         float(cfg.time_input_shift)],
                scale_input=bool(cfg.scale_input), sigma_data=float(cfg.sigma_data),
                null_class=num_classes if num_classes else None, num_classes=num_classes)
    key = jax.random.key(cfg.seed)
    module = build_network(spec["arch"], spec["network"])
    key_init, key = jax.random.split(key)
    params = init_params(module, key_init, data_shape,
                         spec["network"].get("num_class_embeds"))
    data_mean = data.mean(axis=0)
    model = denoiser_from_spec(spec, params, data_mean)

    meta_path = os.path.join(workdir, MODEL_JSON)
    if os.path.exists(meta_path):
        old = json.load(open(meta_path))
        for k in ("arch", "network", "prediction", "schedule", "data_shape"):
            if old.get(k) != spec.get(k):
                raise ValueError(f"train: {workdir} holds a run with a different {k} ({old.get(k)!r} vs "
                                 f"{spec.get(k)!r}); use another workdir")
        spec["cost"], spec["flops_per_sample"] = old.get("cost", 1.0), old.get("flops_per_sample")
        spec["forward_seconds_b256"] = old.get("forward_seconds_b256")
    else:
        spec["flops_per_sample"] = forward_flops(model)
        if cfg.measure_cost:
            sec = forward_seconds(model)
            spec["forward_seconds_b256"] = sec
            spec["cost"] = sec / 256 * 1e6          # microseconds per sample at batch 256
        else:
            spec["forward_seconds_b256"] = None
            spec["cost"] = spec["flops_per_sample"] / 1e6
        spec["cost_unit"] = ("microseconds per sample (forward, batch 256)" if cfg.measure_cost
                             else "MFLOPs per sample (forward, XLA cost analysis)")
        spec["train_config"] = cfg.to_dict()
        np.save(os.path.join(workdir, "data_mean.npy"), data_mean)
        with open(meta_path + ".tmp", "w") as f:
            json.dump(spec, f, indent=1, default=str)
        os.replace(meta_path + ".tmp", meta_path)
    model = denoiser_from_spec(spec, params, data_mean)

    opt = _optimizer(cfg)
    state = {"params": params, "ema": params, "opt_state": opt.init(params),
             "step": jnp.zeros((), jnp.int32)}
    state = jax.device_put(state, repl)

    latest, best = _managers(workdir, int(cfg.keep_checkpoints))
    start = latest.latest_step()
    if start is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = latest.restore(start, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
    step0 = int(state["step"])

    def loss_of(params, x0, y, k):
        return diffusion_loss(model.with_params(params), x0, y, k, cfg)

    @jax.jit
    def train_step(state, xs, ys):
        k = jax.random.fold_in(key, state["step"])
        kb, kl = jax.random.split(k)
        idx = jax.random.randint(kb, (cfg.batch_size,), 0, xs.shape[0])
        x0 = jax.lax.with_sharding_constraint(xs[idx], shard)
        y = jax.lax.with_sharding_constraint(ys[idx], shard)
        loss, grads = jax.value_and_grad(loss_of)(state["params"], x0, y, kl)
        updates, opt_state = opt.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        s = state["step"].astype(jnp.float32)
        decay = jnp.minimum(cfg.ema_decay, (1.0 + s) / (10.0 + s))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema"], params)
        return {"params": params, "ema": ema, "opt_state": opt_state, "step": state["step"] + 1}, loss

    @jax.jit
    def eval_loss(params, xs, ys):
        return diffusion_loss(model.with_params(params), xs, ys, jax.random.key(12345), cfg)

    writer = make_writer(workdir, bool(cfg.tensorboard))
    total = int(cfg.steps)
    end = total if stop_after is None else min(total, step0 + int(stop_after))
    quiet = not sys.stdout.isatty()
    bar = tqdm(total=total, initial=step0, disable=quiet, desc="train", dynamic_ncols=True)
    last_loss, ev, t_run = float("nan"), float("nan"), 0.0
    losses = []

    def checkpoint(step_now):
        nonlocal ev
        ev = float(eval_loss(state["ema"], eval_x, eval_y))
        meta = {"step": step_now, "eval_loss": ev, "train_loss": last_loss}
        latest.save(step_now, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)))
        best.save(step_now, args=ocp.args.Composite(ema=ocp.args.StandardSave(state["ema"]),
                                                    meta=ocp.args.JsonSave(meta)),
                  metrics={"eval_loss": ev})
        writer.write_scalars(step_now, {"eval_loss": ev})

    step = step0
    t0 = t_start = time.perf_counter()
    first_done = False
    max_s = 60.0 * float(cfg.max_minutes)
    while step < end:
        if max_s and step > step0 and time.perf_counter() - t_start > max_s:
            if step % int(cfg.checkpoint_every):       # wall-time budget spent: save, resume later
                checkpoint(step)
            break
        state, loss = train_step(state, train_x, train_y)
        step += 1
        losses.append(loss)
        if not first_done:      # exclude compilation from the timing
            jax.block_until_ready(loss)
            t0, first_done = time.perf_counter(), True
            t_first = step
        if step % int(cfg.log_every) == 0 or step == end:
            vals = np.asarray(jax.device_get(losses))
            last_loss = float(vals[-1])
            writer.write_scalars(step, {"loss": float(vals.mean()), "steps_per_second":
                                        (step - t_first) / max(time.perf_counter() - t0, 1e-9)})
            bar.set_postfix(loss=f"{vals.mean():.4f}")
            losses = []
        bar.update(1)
        if step % int(cfg.checkpoint_every) == 0 or step == end:
            checkpoint(step)
    if first_done:
        jax.block_until_ready(state["params"])
        t_run = time.perf_counter() - t0
    bar.close()
    latest.wait_until_finished()
    best.wait_until_finished()
    latest.close()
    best.close()
    writer.flush()
    writer.close()
    if step0 == end and math.isnan(ev):
        ev = float(eval_loss(state["ema"], eval_x, eval_y))
    return TrainResult(model.with_params(jax.device_get(state["ema"])), step, last_loss, ev, t_run, workdir)


# -------------------------------------------------------------------------------------------- loading
def trained_on(workdir_or_ckpt: str) -> tuple[str, str] | None:
    """(dataset, split) that a `stepwise train` run recorded in its model.json (``train_config``),
    for a run directory or a checkpoint step inside one; None when it is not such a run or the run
    predates the record (a held-out claim then cannot be checked)."""
    found = _run_dir(workdir_or_ckpt)
    if found is None:
        return None
    t = json.load(open(os.path.join(found[0], MODEL_JSON))).get("train_config") or {}
    return (t["dataset"], t["split"]) if "dataset" in t and "split" in t else None


def _run_dir(workdir_or_ckpt: str) -> tuple[str, str | None] | None:
    """(run directory holding model.json, checkpoint step directory or None) of a run directory or
    of a step directory inside one (``<workdir>/checkpoints/<step>``); None when neither."""
    path = os.path.abspath(workdir_or_ckpt)
    if os.path.exists(os.path.join(path, MODEL_JSON)):
        return path, None
    workdir = os.path.dirname(os.path.dirname(path))
    return (workdir, path) if os.path.exists(os.path.join(workdir, MODEL_JSON)) else None


def load_denoiser(workdir_or_ckpt: str, which: str = "best") -> FlaxDenoiser:
    """Rebuild a trained denoiser (EMA weights) from a training workdir or one checkpoint step directory.

    ``workdir_or_ckpt``: a training workdir (holding ``model.json``); ``which`` picks ``"best"`` (lowest
    held-out loss) or ``"latest"``. A step directory (``<workdir>/checkpoints/<step>`` or
    ``<workdir>/best/<step>``) loads that step. A workdir without checkpoints but with
    ``ema_params.npz`` (``export_params``) loads from that file.
    """
    import orbax.checkpoint as ocp

    path = os.path.abspath(workdir_or_ckpt)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_denoiser: {path} does not exist")
    found = _run_dir(path)
    if found is None:
        raise FileNotFoundError(f"load_denoiser: no {MODEL_JSON} in {path} or {os.path.dirname(os.path.dirname(path))}; "
                                "expected a training workdir or a checkpoint step directory in one")
    workdir, step_dir = found
    spec = json.load(open(os.path.join(workdir, MODEL_JSON)))
    mean_path = os.path.join(workdir, "data_mean.npy")
    data_mean = np.load(mean_path) if os.path.exists(mean_path) else None

    npz = os.path.join(workdir, EXPORT_NPZ)
    if step_dir is None and not any(os.path.isdir(os.path.join(workdir, d)) for d in ("best", "checkpoints")):
        if os.path.exists(npz):
            return denoiser_from_spec(spec, _load_npz_params(spec, npz), data_mean)
    if step_dir is None:
        sub = {"best": "best", "latest": "checkpoints"}.get(which)
        if sub is None:
            raise ValueError(f"load_denoiser: which must be 'best' or 'latest', got {which!r}")
        mgr = ocp.CheckpointManager(os.path.join(workdir, sub))
        step = mgr.best_step() if which == "best" else mgr.latest_step()
        if step is None and which == "best":
            mgr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
            step = mgr.latest_step()
            sub = "checkpoints"
        if step is None:
            raise FileNotFoundError(f"load_denoiser: no checkpoint in {workdir}")
        step_dir = os.path.join(workdir, sub, str(step))
    return denoiser_from_spec(spec, _restore_ema(spec, step_dir), data_mean)


def _path_key(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def export_params(model: FlaxDenoiser, workdir: str) -> str:
    """Write the model's parameters to ``<workdir>/ema_params.npz`` (loadable without orbax)."""
    flat = {_path_key(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(model.params)}
    path = os.path.join(workdir, EXPORT_NPZ)
    np.savez(path, **flat)
    return path


def _load_npz_params(spec: dict, path: str):
    module = build_network(spec["arch"], spec["network"])
    abstract = jax.eval_shape(lambda: init_params(module, jax.random.key(0), tuple(spec["data_shape"]),
                                                  spec["network"].get("num_class_embeds")))
    with np.load(path) as z:
        def get(p, a):
            v = z[_path_key(p)]
            if v.shape != a.shape:
                raise ValueError(f"load_denoiser: {_path_key(p)} has shape {v.shape}, expected {a.shape}")
            return jnp.asarray(v, a.dtype)
        return jax.tree_util.tree_map_with_path(get, abstract)


def _restore_ema(spec: dict, step_dir: str):
    """EMA parameters of one step directory, restored onto this machine's first device."""
    import orbax.checkpoint as ocp

    module = build_network(spec["arch"], spec["network"])
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = jax.eval_shape(lambda: init_params(module, jax.random.key(0), tuple(spec["data_shape"]),
                                                spec["network"].get("num_class_embeds")))
    struct = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev)  # noqa: E731
    ckptr = ocp.StandardCheckpointer()
    if os.path.isdir(os.path.join(step_dir, "ema")):
        return ckptr.restore(os.path.join(step_dir, "ema"), jax.tree.map(struct, params))
    cfg = TrainOptions(**spec["train_config"])
    state = {"params": params, "ema": params,
             "opt_state": jax.eval_shape(_optimizer(cfg).init, params),
             "step": jax.ShapeDtypeStruct((), jnp.int32)}
    return ckptr.restore(os.path.join(step_dir, "state"), jax.tree.map(struct, state))["ema"]
