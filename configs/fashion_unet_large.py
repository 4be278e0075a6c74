"""The `large` UNet preset on Fashion-MNIST (32x32, class-conditional), eps prediction, VP linear schedule.

Command:  stepwise train --config configs/fashion_unet_large.py --workdir runs/fashion_unet_large
"""
from __future__ import annotations

import ml_collections

from configs import base
from configs.train_defaults import train_defaults


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    if "train" not in c:
        c.train = train_defaults()
    c.schedule = "vp_linear"
    c.train.arch = "unet"
    c.train.preset = "large"
    c.train.dataset = "fashion_mnist"
    c.train.image_size = 32           # 28x28 padded with background to 32x32
    c.train.num_classes = 10          # class-conditional, null class 10 for guidance
    c.train.steps = 50000
    c.train.batch_size = 128
    c.train.checkpoint_every = 500
    return c
