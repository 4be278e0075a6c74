"""PyTorch denoisers inside the compiled sampler, through torchax.

``torchax.extract_jax(module)`` turns a ``torch.nn.Module`` into its weights (a dict of jax arrays)
and a pure JAX function ``fn(weights, args)``. :class:`TorchDenoiser` holds the weights as PyTree
leaves (so ``jax.grad``, ``jit``, ``lax.scan`` and sharding treat them like a Flax model's
parameters) and the function as a static field, and states the contract a sampler needs:
prediction type, schedule, data shape, cost, conditioning.

Adapters (each reads what it needs from the model's own config):

* :func:`from_unet2d`: diffusers ``UNet2DModel``; prediction from the scheduler config's
  ``prediction_type`` (epsilon / v_prediction / sample), ``VPDiscrete`` from its betas, the network
  sees the discrete step n = N t - 1 (DPM-Solver's t_n = (n+1)/N).
* :func:`from_unet2d_condition`: ``UNet2DConditionModel``; ``cond`` is the text-embedding tensor
  (batch, tokens, dim), the unconditional branch of classifier-free guidance uses ``null_embedding``.
* :func:`from_dit`: ``DiTTransformer2DModel`` (class labels as ``cond``; label -1, the
  unconditional class, maps to DiT's extra embedding row; learned-variance channels are dropped).
* :func:`from_edm`: an EDM-preconditioned network ``net(x, sigma[, labels]) -> D(x; sigma)``
  (Karras et al. 2022) on the ``EDM`` schedule.

Images are NHWC on the stepwise side (``data_shape = (H, W, C)``, like the Flax UNet) and NCHW for
torch; the transposes happen inside the traced call. Loading: :func:`load_diffusers` reads a local
``save_pretrained`` directory (offline) or a ``.safetensors`` state dict plus its ``config.json``.

Needs the ``torch`` extra (``pip install -e ".[torch]"``); importing this module without torch or
torchax raises an ImportError saying so.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from stepwise.denoisers.base import Denoiser, check_prediction
from stepwise.denoisers.guidance import NULL_LABEL
from stepwise.denoisers.unet import forward_flops, noise_input
from stepwise.schedules import EDM

try:
    import torch
    import torchax
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("stepwise.denoisers.torch_bridge needs torch and torchax: pip install -e '.[torch]'") from e

def _conv_channels_last(original):
    """aten.convolution for 2-D, non-transposed convolutions computed in NHWC/HWIO.

    XLA's CPU backend runs an NCHW convolution inside a loop body (the sampler's ``lax.scan``)
    far slower than outside one, while NHWC runs at full speed in both (benchmarks/torch_bridge.py
    measures the sampler with this lowering); the explicit transposes cost little and give the
    same numbers. Other convolutions keep torchax's lowering.
    """

    def conv(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
        if transposed or input.ndim != 4 or weight.ndim != 4:
            return original(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
        pad = tuple(padding) * 2 if len(padding) == 1 else tuple(padding)
        out = jax.lax.conv_general_dilated(
            jnp.transpose(input, (0, 2, 3, 1)), jnp.transpose(weight, (2, 3, 1, 0)), tuple(stride),
            [(p, p) for p in pad], rhs_dilation=tuple(dilation),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)
        if bias is not None:
            out = out + bias
        return jnp.transpose(out, (0, 3, 1, 2))

    return conv


def _environment():
    """A torchax environment of our own (the process-wide default stays untouched) whose 2-D
    convolutions run channels-last (see :func:`_conv_channels_last`)."""
    from torchax.ops import jaten, ops_registry

    env = torchax.tensor.Environment()
    conv = _conv_channels_last(jaten._aten_convolution)

    def conv2d(input, weight, bias, stride, padding, dilation, groups):
        return conv(input, weight, bias, stride, padding, dilation, False, 1, groups)

    for op, impl in ((torch.ops.aten.convolution.default, conv), (torch.ops.aten.conv2d.default, conv2d)):
        env._ops[op] = ops_registry.Operator(op, impl, is_jax_function=True, is_user_defined=True,
                                             needs_env=False, is_view_op=False)
    return env


_ENV = None


def extract(module):
    """(weights, fn) of a torch module, ``fn(weights, args)`` pure JAX (torchax.extract_jax)."""
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return torchax.extract_jax(module, env=_ENV)


DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
CONDITIONING = ("none", "labels", "embedding")


class _Forward(torch.nn.Module):
    """``module(x, time, *cond)`` as a plain tensor function (what extract_jax traces)."""

    def __init__(self, module, call: Callable):
        super().__init__()
        self.module, self.call = module, call

    def forward(self, *args):
        return self.call(self.module, *args)


class TorchDenoiser(Denoiser):
    """A PyTorch network (via torchax) as a contract-following denoiser.

    The call computes ``net(x_nchw, c_noise(t), cond)`` with ``c_noise`` as in
    :func:`denoisers.unet.noise_input` (``time_input = (kind, scale, shift)``) and keeps the first
    ``out_channels`` output channels (None: all).
    """

    weights: dict
    schedule: Any
    data_mean: jnp.ndarray
    null_embedding: jnp.ndarray | None
    forward: Callable = eqx.field(static=True)
    prediction: str = eqx.field(static=True)
    data_shape: tuple = eqx.field(static=True)
    cost: float = eqx.field(static=True)
    time_input: tuple = eqx.field(static=True)
    conditioning: str = eqx.field(static=True)
    null_class: int | None = eqx.field(static=True)
    out_channels: int | None = eqx.field(static=True)
    channels_last: bool = eqx.field(static=True)

    def __init__(self, module, call: Callable, prediction: str, schedule, data_shape, *, time_input,
                 conditioning: str = "none", null_class: int | None = None, null_embedding=None,
                 out_channels: int | None = None, channels_last: bool = True, cost: float | None = None,
                 data_mean=None):
        if conditioning not in CONDITIONING:
            raise ValueError(f"conditioning: unknown value {conditioning!r}; allowed: {list(CONDITIONING)}")
        module = module.eval()
        self.weights, self.forward = extract(_Forward(module, call))
        self.prediction = check_prediction(prediction)
        self.schedule = schedule
        self.data_shape = tuple(int(d) for d in data_shape)
        self.time_input = (str(time_input[0]), float(time_input[1]), float(time_input[2]))
        self.conditioning, self.null_class = conditioning, null_class
        self.null_embedding = None if null_embedding is None else jnp.asarray(np.asarray(null_embedding), jnp.float32)
        if conditioning == "embedding" and self.null_embedding is None:
            raise ValueError("null_embedding: an embedding-conditioned model needs the unconditional embedding "
                             "(tokens, dim) for classifier-free guidance and unconditional calls")
        self.out_channels, self.channels_last = out_channels, bool(channels_last)
        self.data_mean = (jnp.zeros(self.data_shape, jnp.float32) if data_mean is None
                          else jnp.broadcast_to(jnp.asarray(data_mean, jnp.float32), self.data_shape))
        self.cost = 1.0
        self.cost = float(cost) if cost is not None else max(forward_flops(self, batch=1), 1.0)

    @property
    def compute_dtype(self):
        """The dtype the network runs in: its floating weights' (float32 as extracted; bfloat16 under
        ``denoisers.LowPrecision``, which casts them), whatever the sampler's state dtype is."""
        kinds = {w.dtype for w in jax.tree.leaves(self.weights) if eqx.is_inexact_array(w)}
        if len(kinds) > 1:
            raise ValueError(f"TorchDenoiser: weights of several floating dtypes {sorted(map(str, kinds))}; "
                             "cast them to one")
        return kinds.pop() if kinds else jnp.dtype(jnp.float32)

    @property
    def num_classes(self) -> int:
        """Classes of a label-conditioned network (the null class excluded), 0 otherwise."""
        return int(self.null_class) if self.conditioning == "labels" and self.null_class is not None else 0

    def null_condition(self, cond):
        """The unconditional counterpart of a batch of conditions (see ``guidance.null_condition``)."""
        if self.conditioning == "embedding":
            return jnp.broadcast_to(self.null_embedding.astype(cond.dtype), cond.shape)
        return jnp.full_like(cond, NULL_LABEL)

    def _cond_args(self, cond, batch: int, dtype) -> tuple:
        if self.conditioning == "none":
            return ()
        if self.conditioning == "embedding":
            emb = self.null_embedding[None] if cond is None else jnp.asarray(cond)
            return (jnp.broadcast_to(emb, (batch,) + emb.shape[1:]).astype(dtype),)
        null = NULL_LABEL if self.null_class is None else self.null_class
        labels = jnp.full((batch,), null, jnp.int32) if cond is None else jnp.asarray(cond, jnp.int32)
        return (jnp.where(labels < 0, null, jnp.broadcast_to(labels, (batch,))),)

    def __call__(self, x, t, cond=None):
        if x.shape[1:] != self.data_shape:
            raise ValueError(f"TorchDenoiser: x has shape {x.shape}, expected (batch, *{self.data_shape})")
        b = x.shape[0]
        dt = self.compute_dtype
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (b,))
        x_in = x.astype(dt)
        if self.channels_last and x.ndim == 4:
            x_in = jnp.transpose(x_in, (0, 3, 1, 2))
        out = self.forward(self.weights, (x_in, noise_input(self.schedule, t, self.time_input).astype(dt))
                           + self._cond_args(cond, b, dt))
        if self.out_channels is not None:
            out = out[:, :self.out_channels]
        if self.channels_last and x.ndim == 4:
            out = jnp.transpose(out, (0, 2, 3, 1))
        return out.astype(x.dtype)

    def with_weights(self, weights) -> "TorchDenoiser":
        return eqx.tree_at(lambda m: m.weights, self, weights)


def _image_shape(config) -> tuple[int, int, int]:
    size = config.get("sample_size") or 32
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (int(h), int(w), int(config.get("in_channels", 3)))


def _prediction(scheduler_config: dict | None) -> str:
    kind = (scheduler_config or {}).get("prediction_type", "epsilon")
    if kind not in DIFFUSERS_PREDICTIONS:
        raise ValueError(f"scheduler_config.prediction_type: {kind!r} is not supported; "
                         f"allowed: {sorted(DIFFUSERS_PREDICTIONS)}")
    return DIFFUSERS_PREDICTIONS[kind]


def _vp_discrete(scheduler_config):
    from stepwise.denoisers.diffusers_import import schedule_from_scheduler_config
    sched = schedule_from_scheduler_config(scheduler_config)
    return sched, ("t", float(sched.ts_grid.shape[0]), -1.0)


def from_unet2d(module, scheduler_config: dict | None = None, null_class: int | None = None, **kw) -> TorchDenoiser:
    """A diffusers ``UNet2DModel`` (unconditional, or class-conditional through ``num_class_embeds``:
    labels as ``cond``; ``null_class`` names the label trained as "unconditional", which label -1
    and classifier-free guidance then use)."""
    sched, time_input = _vp_discrete(scheduler_config)
    classes = module.config.get("num_class_embeds")

    def call(m, x, t, *cond):
        return m(x, t, class_labels=cond[0] if cond else None, return_dict=False)[0]

    return TorchDenoiser(module, call, _prediction(scheduler_config), sched, _image_shape(module.config),
                         time_input=time_input, conditioning="labels" if classes else "none",
                         null_class=null_class, **kw)


def from_unet2d_condition(module, scheduler_config: dict | None = None, null_embedding=None, **kw) -> TorchDenoiser:
    """A diffusers ``UNet2DConditionModel``: ``cond`` = encoder hidden states (batch, tokens, dim);
    ``null_embedding`` (tokens, dim) is the empty prompt's (classifier-free guidance)."""
    sched, time_input = _vp_discrete(scheduler_config)

    def call(m, x, t, emb):
        return m(x, t, encoder_hidden_states=emb, return_dict=False)[0]

    return TorchDenoiser(module, call, _prediction(scheduler_config), sched, _image_shape(module.config),
                         time_input=time_input, conditioning="embedding", null_embedding=null_embedding, **kw)


def from_dit(module, scheduler_config: dict | None = None, **kw) -> TorchDenoiser:
    """A diffusers ``DiTTransformer2DModel`` (class labels as ``cond``; -1 = DiT's null class)."""
    sched, time_input = _vp_discrete(scheduler_config)
    cfg = module.config
    shape = _image_shape(cfg)
    classes = int(cfg.get("num_embeds_ada_norm") or 0)
    if not classes:
        raise ValueError("DiTTransformer2DModel: config.num_embeds_ada_norm (the number of classes) is not set")

    def call(m, x, t, labels):
        return m(x, timestep=t, class_labels=labels, return_dict=False)[0]

    return TorchDenoiser(module, call, _prediction(scheduler_config), sched, shape, time_input=time_input,
                         conditioning="labels", null_class=classes, out_channels=shape[-1], **kw)


def from_edm(module, data_shape, sigma_min: float = 0.002, sigma_max: float = 80.0, num_classes: int = 0,
             channels_last: bool = True, **kw) -> TorchDenoiser:
    """An EDM-preconditioned network ``module(x, sigma[, labels]) -> D(x; sigma)`` (the denoised x0;
    Karras et al. 2022) on the EDM schedule (alpha = 1, sigma = t). With ``num_classes`` the label
    ``num_classes`` is the unconditional one."""

    def call(m, x, sigma, *cond):
        return m(x, sigma, *cond)

    return TorchDenoiser(module, call, "x0", EDM(sigma_min, sigma_max), data_shape, time_input=("t", 1.0, 0.0),
                         conditioning="labels" if num_classes else "none",
                         null_class=num_classes or None, channels_last=channels_last, **kw)


ADAPTERS = {"UNet2DModel": from_unet2d, "UNet2DConditionModel": from_unet2d_condition,
            "DiTTransformer2DModel": from_dit}


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the {what} ({e})") from None


def _model_dir(path: str) -> str:
    """A model directory: ``path`` itself, or the unet/transformer folder of a pipeline directory."""
    if os.path.exists(os.path.join(path, "model_index.json")):
        for sub in ("unet", "transformer"):
            if os.path.exists(os.path.join(path, sub, "config.json")):
                return os.path.join(path, sub)
        raise ValueError(f"{path}: a pipeline directory without a unet/ or transformer/ model")
    return path


def load_torch_module(path: str, config: dict | None = None):
    """(torch module, its directory) from a diffusers ``save_pretrained`` directory (offline) or a
    ``.safetensors`` state dict with ``config`` (default: the ``config.json`` beside it)."""
    import diffusers

    if not os.path.exists(path):
        raise FileNotFoundError(f"model.path: {path} does not exist")
    if os.path.isdir(path):
        model_dir = _model_dir(path)
        cfg = _read_json(os.path.join(model_dir, "config.json"), "model config")
    else:
        if not path.endswith(".safetensors"):
            raise ValueError(f"model.path: {path} is neither a model directory nor a .safetensors file")
        model_dir = os.path.dirname(os.path.abspath(path))
        cfg = config if config is not None else _read_json(os.path.join(model_dir, "config.json"), "model config")
    name = cfg.get("_class_name")
    if name not in ADAPTERS:
        raise ValueError(f"model config: _class_name {name!r} is not supported; allowed: {sorted(ADAPTERS)}")
    cls = getattr(diffusers, name)
    if os.path.isdir(path):
        module = cls.from_pretrained(model_dir, local_files_only=True)
    else:
        from safetensors.torch import load_file
        module = cls.from_config(cfg)
        module.load_state_dict(load_file(path), strict=True)
    return module.eval(), model_dir


def load_diffusers(path: str, config: dict | None = None, scheduler_config: dict | None = None,
                   **kw) -> TorchDenoiser:
    """A local diffusers model (directory or ``.safetensors`` + config) through its adapter; the
    scheduler config is read from beside the model or its pipeline's ``scheduler/`` folder."""
    module, model_dir = load_torch_module(path, config)
    from stepwise.denoisers.diffusers_import import find_scheduler_config
    sc = scheduler_config if scheduler_config is not None else find_scheduler_config(model_dir)
    return ADAPTERS[type(module).__name__](module, sc, **kw)
