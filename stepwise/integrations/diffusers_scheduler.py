"""``StepwiseScheduler``: a stepwise schedule file executed inside diffusers pipelines (torch).

Every per-step decision of the plan runs (nodes, prediction type, order, variant, expansion, base,
corrector, analytic first step, learned weight corrections): the plan is unrolled once into a
:class:`samplers.program.Program` (the executor's own coefficient function), and each ``step()``
call feeds one model output to :func:`samplers.program.interpret` and returns the next model
input. So ``timesteps`` has one entry per MODEL CALL (a UniPC corrector's last evaluation, a Heun
re-evaluation included), like diffusers' own Heun scheduler.

Contract with a pipeline (what ``DDPMPipeline``, ``DiTPipeline`` and the Stable Diffusion pipelines
call): ``set_timesteps(n)`` (``n`` must be the plan's NFE, or None), a loop over ``timesteps`` that
evaluates the model at ``scale_model_input(sample, t)`` (or at ``sample``), and
``step(model_output, t, sample).prev_sample``. The analytic first step (no model call at the first
node) needs a pipeline that calls ``scale_model_input``: it returns the state after that step.

Guidance: pipelines combine classifier-free guidance themselves. ``guidance_scale`` is the plan's
scale for the NEXT model call; :meth:`StepwiseScheduler.guidance_callback` passed as a pipeline's
``callback_on_step_end`` sets ``pipe._guidance_scale`` from it (per-step guidance in the Stable
Diffusion family); start the pipeline with ``guidance_scale=scheduler.guidance_scales[0]``.
Plans that switch between several models (T-Stitch) are refused: a pipeline holds one denoiser.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from stepwise.denoisers.diffusers_import import schedule_from_scheduler_config
from stepwise.samplers.program import compile_plan, interpret
from stepwise.search.schedule_file import load_schedule, plan_from_dict

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
_BETA_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type")


def _x0_eps(output, x, alpha: float, sigma: float, kind: str):
    """(x0, eps) from a diffusers model output of ``prediction_type`` ``kind`` at x = alpha x0 + sigma eps."""
    if kind == "epsilon":
        return (x - sigma * output) / alpha, output
    if kind == "sample":
        return output, (x - alpha * output) / sigma
    norm = alpha ** 2 + sigma ** 2          # v = alpha eps - sigma x0
    return (alpha * x - sigma * output) / norm, (sigma * x + alpha * output) / norm


class StepwiseScheduler(SchedulerMixin, ConfigMixin):
    """Runs one stepwise plan (a schedule-file dict in ``plan``) on a DDPM-style discrete schedule."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(self, plan: dict | None = None, num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, beta_schedule: str = "linear", trained_betas=None,
                 prediction_type: str = "epsilon", data_mean: float = 0.0):
        if plan is None:
            raise ValueError("StepwiseScheduler: plan is required (a schedule-file dict; use from_schedule_file)")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type: {prediction_type!r} is not supported; allowed: {list(PREDICTION_TYPES)}")
        self._schedule = schedule_from_scheduler_config(
            {"num_train_timesteps": num_train_timesteps, "beta_start": beta_start, "beta_end": beta_end,
             "beta_schedule": beta_schedule, "trained_betas": trained_betas})
        self._plan = plan_from_dict(plan, self._schedule)
        models = sorted({int(m) for m in np.asarray(self._plan.model)})
        if models != [0]:
            raise ValueError(f"StepwiseScheduler: the plan uses models {models}; a diffusers pipeline runs one "
                             "denoiser (stitched plans run in stepwise's sampler)")
        if np.any(np.asarray(self._plan.skip)):
            raise ValueError("StepwiseScheduler: the plan skips network units per step (a searched architecture); "
                             "a diffusers pipeline runs its whole network every call (such plans run in stepwise's "
                             "sampler with the Flax network they were searched for)")
        self._program = compile_plan(self._plan, self._schedule)
        self._requests = self._program.requests
        n = float(num_train_timesteps)
        self._timesteps = torch.tensor([n * r.t - 1.0 for r in self._requests], dtype=torch.float32)
        self.num_inference_steps = len(self._requests)
        self.init_noise_sigma = 1.0
        self._reset()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_schedule_file(cls, path, scheduler_config=None, data_mean: float = 0.0) -> "StepwiseScheduler":
        """The scheduler of a schedule file. ``scheduler_config`` (a diffusers scheduler, its
        config, or a path to a ``scheduler_config.json``) supplies the model's betas and
        ``prediction_type``; default: DDPM's linear betas, epsilon prediction."""
        if isinstance(scheduler_config, (str, os.PathLike)):
            scheduler_config = cls.load_config(os.fspath(scheduler_config))
        elif scheduler_config is not None and hasattr(scheduler_config, "config"):
            scheduler_config = scheduler_config.config
        sc = dict(scheduler_config or {})
        kw = {k: sc[k] for k in _BETA_FIELDS if k in sc}
        return cls(plan=load_schedule(path), data_mean=data_mean, **kw)

    # -- the diffusers scheduler contract ---------------------------------------------------------
    @property
    def timesteps(self) -> torch.Tensor:
        """The model's time input (discrete step n = N t - 1, float) at every model call."""
        return self._timesteps

    @property
    def guidance_scales(self) -> list[float]:
        """The plan's guidance scale at every model call."""
        return [r.guidance for r in self._requests]

    @property
    def guidance_scale(self) -> float:
        """The plan's guidance scale for the next model call."""
        return self.guidance_scales[min(self._calls, len(self._requests) - 1)]

    def set_timesteps(self, num_inference_steps: int | None = None, device=None, **kwargs):
        """Start a new run. ``num_inference_steps`` must equal the plan's NFE (the plan fixes it)."""
        unknown = set(kwargs) - {"timesteps", "sigmas"}
        if unknown or any(kwargs.get(k) is not None for k in ("timesteps", "sigmas")):
            raise ValueError("StepwiseScheduler.set_timesteps: the plan fixes the nodes; custom timesteps/sigmas "
                             f"are not accepted (got {sorted(k for k in kwargs if kwargs[k] is not None)})")
        if num_inference_steps is not None and int(num_inference_steps) != self.num_inference_steps:
            raise ValueError(f"num_inference_steps: {num_inference_steps} but the plan makes "
                             f"{self.num_inference_steps} model calls; pass num_inference_steps="
                             f"{self.num_inference_steps}")
        if device is not None:
            self._timesteps = self._timesteps.to(device)
        self._reset()

    def _reset(self):
        self._gen, self._pending, self._calls, self._done, self._afs = None, None, 0, False, None

    def _mean(self, sample: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(self.config.data_mean, np.float32), dtype=sample.dtype, device=sample.device)

    def _start(self, sample: torch.Tensor):
        self._gen = interpret(self._program, sample, self._mean(sample))
        self._advance(None)

    def _advance(self, value):
        try:
            self._pending = next(self._gen) if value is None else self._gen.send(value)
        except StopIteration as stop:
            self._pending, self._done, self._final = None, True, stop.value

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        """The model input for ``sample``: itself, except before the first call of a plan with the
        analytic first step, where it is the state after that step (computed for whatever batch
        the pipeline passes, e.g. a CFG-doubled one; ``step`` then recomputes it for its own)."""
        if self._gen is None and bool(int(self._plan.analytic_first)):
            out = next(interpret(self._program, sample, self._mean(sample)))[1]
            self._afs = (sample, out)
            return out
        return sample

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor, return_dict: bool = True,
             **kwargs):
        """Feed one model output; ``prev_sample`` is the next model input (the sample after the last)."""
        if self._gen is None:
            if bool(int(self._plan.analytic_first)):
                if self._afs is None:
                    raise ValueError("StepwiseScheduler: this plan starts with the analytic first step; the pipeline "
                                     "must call scheduler.scale_model_input(sample, t) and evaluate the model at its result")
                x_T, x_1 = self._afs   # pipelines pass either the noise (SD) or the scaled input (DiT) back
                b = sample.shape[0]
                sample = x_T[:b] if b <= x_1.shape[0] and torch.equal(sample, x_1[:b]) else sample
            self._start(sample)
        if self._pending is None:
            raise ValueError("StepwiseScheduler: step() called after the plan's last model call; "
                             "call set_timesteps to start again")
        req, x = self._pending
        if model_output.shape != x.shape:
            raise ValueError(f"model_output: shape {tuple(model_output.shape)} does not match the sample's {tuple(x.shape)}")
        self._calls += 1
        self._advance(_x0_eps(model_output.to(x.dtype), x, req.alpha, req.sigma, self.config.prediction_type))
        prev = self._final if self._done else self._pending[1]
        return SchedulerOutput(prev_sample=prev) if return_dict else (prev,)

    def guidance_callback(self, pipe, step_index: int, timestep, callback_kwargs: dict) -> dict:
        """``callback_on_step_end`` for pipelines that read ``pipe._guidance_scale`` every step."""
        pipe._guidance_scale = self.guidance_scale
        return callback_kwargs

    def __len__(self) -> int:
        return self.config.num_train_timesteps
