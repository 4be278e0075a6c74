"""Training options: one frozen dataclass, the ONE home of the training defaults.

``stepwise train``'s config section ``train`` is generated from these fields (``stepwise.cli.defaults``),
so a default changes in one place. ``network_overrides`` holds keyword arguments of the network's
constructor (e.g. ``{"patch_size": 2}``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

DATASETS = ("digits", "fashion_mnist", "npz", "folder", "gmm_samples")
ARCHS = ("unet", "mlp")
LOSS_WEIGHTINGS = ("auto", "eps", "min_snr", "uniform")
T_SAMPLINGS = ("uniform", "logsnr")
TIME_INPUTS = ("logsnr", "t")
# Splits a model may train on. Fashion-MNIST's "all" is its official 60k train split (its test split is
# never trained on); digits' "train" is stepwise.data's seeded 80% split, leaving its test split held out.
TRAIN_SPLITS = {"digits": ("all", "train"), "fashion_mnist": ("all", "train")}
# The (dataset, split) pairs that leave a test split out: the held-out scores accept only these.
HELD_OUT_SPLITS = {("digits", "train"), ("fashion_mnist", "all"), ("fashion_mnist", "train")}


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    seed: int = 0
    # data
    dataset: str = "digits"          # digits | fashion_mnist | npz | folder | gmm_samples
    image_size: int = 16             # digits: 8, 16 or 32; fashion_mnist: 28 or 32 (padded)
    data_path: str = ""              # npz file / image folder / Fashion-MNIST directory (default: Debian's)
    split: str = "all"               # digits: all (1797) | train (the seeded 80% of stepwise.data, so its
                                     # test split stays held out); fashion_mnist trains on its train split
    flat: bool = False               # vectors (n, d) instead of images (n, H, W, C); the MLP needs flat
    num_classes: int = 0             # > 0: class-conditional with a null class (classifier-free guidance)
    p_uncond: float = 0.1            # probability of dropping the label during training
    # network
    arch: str = "unet"               # unet | mlp
    preset: str = "small"            # small | large (~9x small) | xl (~24x small)
    network_overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    prediction: str = "eps"          # eps | x0 | v | score | flow
    time_input_kind: str = "logsnr"  # network input c_noise = scale * f(t) + shift, f = t or half log-SNR
    time_input_scale: float = 50.0
    time_input_shift: float = 0.0
    scale_input: bool = True         # feed x / sqrt(alpha^2 sigma_data^2 + sigma^2)
    sigma_data: float = 0.5
    measure_cost: bool = True        # record measured forward time (batch 256) as the denoiser's cost
    # optimisation
    steps: int = 6000
    max_minutes: float = 0.0         # > 0: stop (checkpointed, resumable) after this much wall time
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 200
    final_lr_fraction: float = 0.05
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    loss_weighting: str = "auto"     # auto | eps | min_snr | uniform
    t_sampling: str = "uniform"      # uniform | logsnr
    # bookkeeping
    log_every: int = 100
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    eval_examples: int = 256
    tensorboard: bool = False        # needs the optional tensorflow + tensorboard extra

    def __post_init__(self):
        for field, allowed in (("dataset", DATASETS), ("arch", ARCHS), ("loss_weighting", LOSS_WEIGHTINGS),
                               ("t_sampling", T_SAMPLINGS), ("time_input_kind", TIME_INPUTS)):
            if getattr(self, field) not in allowed:
                raise ValueError(f"train.{field}: {getattr(self, field)!r} is invalid; allowed: {list(allowed)}")
        for field, lo in (("steps", 1), ("batch_size", 1), ("log_every", 1), ("checkpoint_every", 1),
                          ("keep_checkpoints", 1), ("eval_examples", 1), ("warmup_steps", 0), ("num_classes", 0),
                          ("image_size", 1)):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"train.{field}: {v!r} is invalid; allowed: an integer >= {lo}")
        splits = TRAIN_SPLITS.get(self.dataset, ("all",))
        if self.split not in splits:
            raise ValueError(f"train.split: {self.split!r} is invalid for dataset {self.dataset!r}; allowed: {list(splits)}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"train.p_uncond: {self.p_uncond!r} is invalid; allowed: a probability in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay: {self.ema_decay!r} is invalid; allowed: [0, 1)")
        if not self.learning_rate > 0:
            raise ValueError(f"train.learning_rate: {self.learning_rate!r} is invalid; allowed: a positive number")
        if self.max_minutes < 0:
            raise ValueError(f"train.max_minutes: {self.max_minutes!r} is invalid; allowed: >= 0 (0: no limit)")

    def replace(self, **kw) -> "TrainOptions":
        return dataclasses.replace(self, **kw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["network_overrides"] = dict(self.network_overrides)
        return d
