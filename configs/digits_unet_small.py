"""The `small` UNet preset on 16x16 bundled digits, eps prediction, VP linear schedule.

Command:  stepwise train --config configs/digits_unet_small.py --workdir runs/digits_unet_small
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
    c.train.preset = "small"
    c.train.dataset = "digits"
    c.train.image_size = 16
    c.train.steps = 6000
    c.train.batch_size = 64
    c.train.checkpoint_every = 500
    return c
