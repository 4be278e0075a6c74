"""Load a diffusers ``UNet2DModel`` checkpoint directory into the Flax UNet of ``denoisers.unet``.

Reads ``config.json`` and ``diffusion_pytorch_model.safetensors`` with safetensors' NumPy API (no torch at
run time). Supported: positional time embedding (``flip_sin_to_cos``, ``freq_shift``), the block types
DDPM checkpoints use (DownBlock2D, AttnDownBlock2D, UpBlock2D, AttnUpBlock2D, UNetMidBlock2D),
``resnet_time_scale_shift`` "default" or "scale_shift", class embeddings (``num_class_embeds``), and the
old attention weight names (query/key/value/proj_attn). The result predicts eps and is bound to a
``VPDiscrete`` schedule built from a scheduler config's betas (``scheduler_config.json`` beside the model
or in ``../scheduler``), else DDPM's linear betas; the network sees the discrete step index
n = N t - 1 (DPM-Solver's convention t_n = (n+1)/N).
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from stepwise.denoisers.unet import FlaxDenoiser, UNet, init_params
from stepwise.schedules import VPDiscrete

_LISTS = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers", "to_out")
_OLD_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def unet_from_config(cfg: dict) -> UNet:
    """The Flax UNet equivalent to a diffusers ``UNet2DModel`` config (raises on unsupported options)."""
    if cfg.get("time_embedding_type", "positional") != "positional":
        raise ValueError(f"diffusers: time_embedding_type {cfg['time_embedding_type']!r} is not supported")
    for key, ok in (("class_embed_type", None), ("center_input_sample", False),
                    ("downsample_type", "conv"), ("upsample_type", "conv"), ("act_fn", "silu")):
        if cfg.get(key, ok) != ok:
            raise ValueError(f"diffusers: {key}={cfg[key]!r} is not supported (only {ok!r})")
    mid = cfg.get("mid_block_type", "UNetMidBlock2D")
    if mid not in (None, "UNetMidBlock2D"):
        raise ValueError(f"diffusers: mid_block_type {mid!r} is not supported")
    chans = tuple(cfg.get("block_out_channels", (224, 448, 672, 896)))
    return UNet(out_channels=int(cfg.get("out_channels", 3)),
                block_out_channels=chans,
                down_block_types=tuple(cfg.get("down_block_types")),
                up_block_types=tuple(cfg.get("up_block_types")),
                layers_per_block=int(cfg.get("layers_per_block", 2)),
                attention_head_dim=cfg.get("attention_head_dim", 8),
                norm_num_groups=int(cfg.get("norm_num_groups") or min(chans[0] // 4, 32)),
                attn_norm_num_groups=cfg.get("attn_norm_num_groups"),
                norm_eps=float(cfg.get("norm_eps", 1e-5)),
                flip_sin_to_cos=bool(cfg.get("flip_sin_to_cos", True)),
                freq_shift=float(cfg.get("freq_shift", 0)),
                time_embedding_dim=cfg.get("time_embedding_dim"),
                num_class_embeds=cfg.get("num_class_embeds"),
                mid_block=mid is not None,
                add_attention=bool(cfg.get("add_attention", True)),
                mid_block_scale_factor=float(cfg.get("mid_block_scale_factor", 1.0)),
                resnet_time_scale_shift=cfg.get("resnet_time_scale_shift", "default"),
                downsample_padding=int(cfg.get("downsample_padding", 1)))


def _flax_path(torch_key: str) -> tuple[tuple[str, ...], str]:
    """diffusers key -> (Flax module path, parameter kind: weight|bias).

    ``down_blocks.0.resnets.1.conv1.weight`` -> (("down_blocks_0__resnets_1", "conv1"), "weight");
    ``up_blocks.0.upsamplers.0.conv.bias`` -> (("up_blocks_0__upsamplers_0__conv",), "bias");
    ``mid_block.attentions.0.to_out.0.weight`` -> (("mid_block__attentions_0", "to_out_0"), "weight").
    """
    *mods, leaf = torch_key.split(".")
    merged: list[str] = []
    for p in mods:
        if p.isdigit() and merged and merged[-1] in _LISTS:
            merged[-1] = f"{merged[-1]}_{p}"
        else:
            merged.append(_OLD_ATTN.get(p, p).replace(".0", "_0"))
    if merged[0].startswith(("down_blocks_", "up_blocks_", "mid_block")) and len(merged) > 1:
        n_top = 3 if merged[1].startswith(("downsamplers_", "upsamplers_")) else 2
        merged = ["__".join(merged[:n_top])] + merged[n_top:]
    return tuple(merged), leaf


def _convert(value: np.ndarray, leaf: str, module: str) -> tuple[str, np.ndarray]:
    if leaf == "bias":
        return "bias", value
    if "norm" in module:
        return "scale", value
    if module == "class_embedding":
        return "embedding", value
    if value.ndim == 4:                 # conv OIHW -> HWIO
        return "kernel", value.transpose(2, 3, 1, 0)
    if value.ndim == 2:                 # linear (out, in) -> (in, out)
        return "kernel", value.T
    raise ValueError(f"diffusers: cannot convert parameter {module}.{leaf} of shape {value.shape}")


def convert_state_dict(state: dict[str, np.ndarray], template) -> dict:
    """Map a diffusers state dict onto a Flax parameter tree shaped like ``template`` (checked)."""
    flat: dict[tuple, np.ndarray] = {}
    for k, v in state.items():
        path, leaf = _flax_path(k)
        name, arr = _convert(np.asarray(v, np.float32), leaf, path[-1])
        flat[path + (name,)] = arr

    def walk(node, prefix):
        out = {}
        for k, sub in node.items():
            p = prefix + (k,)
            if isinstance(sub, dict):
                out[k] = walk(sub, p)
            else:
                if p not in flat:
                    raise ValueError(f"diffusers: checkpoint lacks a weight for {'/'.join(p)}")
                arr = flat.pop(p)
                if arr.shape != tuple(sub.shape):
                    raise ValueError(f"diffusers: {'/'.join(p)} has shape {arr.shape}, expected {tuple(sub.shape)}")
                out[k] = jnp.asarray(arr)
        return out

    params = walk(template, ())
    if flat:
        raise ValueError(f"diffusers: unused checkpoint weights: {sorted('/'.join(p) for p in flat)[:8]}")
    return params


def find_scheduler_config(path: str) -> dict | None:
    for cand in (os.path.join(path, "scheduler_config.json"),
                 os.path.join(os.path.dirname(os.path.abspath(path)), "scheduler", "scheduler_config.json")):
        if os.path.exists(cand):
            with open(cand) as f:
                return json.load(f)
    return None


def schedule_from_scheduler_config(sc: dict | None) -> VPDiscrete:
    """VPDiscrete from a diffusers scheduler config (linear / scaled_linear / explicit betas)."""
    if sc is None:
        return VPDiscrete.ddpm_linear()
    n = int(sc.get("num_train_timesteps", 1000))
    if sc.get("trained_betas") is not None:
        return VPDiscrete(np.asarray(sc["trained_betas"], np.float64))
    kind = sc.get("beta_schedule", "linear")
    b0, b1 = float(sc.get("beta_start", 1e-4)), float(sc.get("beta_end", 0.02))
    if kind == "linear":
        return VPDiscrete(np.linspace(b0, b1, n))
    if kind == "scaled_linear":
        return VPDiscrete(np.linspace(b0**0.5, b1**0.5, n) ** 2)
    raise ValueError(f"diffusers: beta_schedule {kind!r} is not supported (linear, scaled_linear, trained_betas)")


def load_diffusers_unet(path: str, scheduler_config: dict | None = None, dtype=jnp.float32) -> FlaxDenoiser:
    """A diffusers ``UNet2DModel`` directory as an eps-predicting ``FlaxDenoiser`` (NHWC images)."""
    from safetensors.numpy import load_file

    cfg_path = os.path.join(path, "config.json")
    w_path = os.path.join(path, "diffusion_pytorch_model.safetensors")
    for f in (cfg_path, w_path):
        if not os.path.exists(f):
            raise FileNotFoundError(f"diffusers: {f} not found (expected a UNet2DModel save_pretrained directory)")
    with open(cfg_path) as f:
        cfg = json.load(f)
    if cfg.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"diffusers: {cfg['_class_name']} is not supported; only UNet2DModel")
    module = unet_from_config(cfg)
    size = cfg.get("sample_size") or 32
    size = (size, size) if isinstance(size, int) else tuple(size)
    data_shape = (*size, int(cfg.get("in_channels", 3)))
    template = init_params(module, jax.random.key(0), data_shape, cfg.get("num_class_embeds"))
    params = convert_state_dict(load_file(w_path), template)
    params = jax.tree.map(lambda a: a.astype(dtype), params)
    sched = schedule_from_scheduler_config(scheduler_config if scheduler_config is not None
                                           else find_scheduler_config(path))
    n = int(sched.ts_grid.shape[0])
    return FlaxDenoiser(module, params, "eps", sched, data_shape, cost=1.0,
                        time_input=("t", float(n), -1.0), scale_input=False)
