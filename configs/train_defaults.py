"""Defaults for ``stepwise train`` (attached as ``config.train`` by ``configs/base.py``).

Command:  stepwise train --config configs/digits_unet_small.py --workdir runs/digits_small
"""
from __future__ import annotations

import ml_collections


def train_defaults() -> ml_collections.ConfigDict:
    t = ml_collections.ConfigDict()
    t.seed = 0
    # Data: digits | fashion_mnist | npz | folder | gmm_samples
    t.dataset = "digits"
    t.image_size = 16            # digits: 8, 16 or 32; fashion_mnist: 28 or 32 (padded)
    t.data_path = ""             # npz file / image folder / Fashion-MNIST directory (default: Debian's)
    t.flat = False               # vectors (n, d) instead of images (n, H, W, C); the MLP needs flat
    t.num_classes = 0            # > 0: class-conditional with a null class (classifier-free guidance)
    t.p_uncond = 0.1             # probability of dropping the label during training
    # Network
    t.arch = "unet"              # unet | mlp
    t.preset = "small"           # small | large (~9x small) | xl (~24x small)
    t.network_overrides = ml_collections.ConfigDict()   # any field of the network's constructor
    t.prediction = "eps"         # eps | x0 | v | score | flow
    t.time_input_kind = "logsnr"  # network input c_noise = scale * f(t) + shift, f = t or half log-SNR
    t.time_input_scale = 50.0
    t.time_input_shift = 0.0
    t.scale_input = True         # feed x / sqrt(alpha^2 sigma_data^2 + sigma^2)
    t.sigma_data = 0.5
    t.measure_cost = True        # record measured forward time (batch 256) as the denoiser's cost
    # Optimisation
    t.steps = 6000
    t.max_minutes = 0.0          # > 0: stop (checkpointed, resumable) after this much wall time
    t.batch_size = 128
    t.learning_rate = 2e-3
    t.warmup_steps = 200
    t.final_lr_fraction = 0.05
    t.weight_decay = 1e-4
    t.grad_clip = 1.0
    t.ema_decay = 0.999
    t.loss_weighting = "auto"    # auto | eps | min_snr | uniform
    t.t_sampling = "uniform"     # uniform | logsnr
    # Bookkeeping
    t.log_every = 100
    t.checkpoint_every = 1000
    t.keep_checkpoints = 2
    t.eval_examples = 256
    t.tensorboard = False        # needs the optional tensorflow + tensorboard extra
    return t
