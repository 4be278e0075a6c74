"""The `small` UNet preset on 16x16 bundled digits, eps prediction, VP linear schedule.

Command:  stepwise train --config configs/digits_unet_small.py --workdir runs/digits_unet_small
"""
from stepwise.cli.defaults import get_config as base_config


def get_config():
    c = base_config()
    c.schedule = "vp_linear"
    c.train.arch = "unet"
    c.train.preset = "small"
    c.train.dataset = "digits"
    c.train.image_size = 16
    c.train.steps = 6000
    c.train.batch_size = 64
    c.train.checkpoint_every = 500
    return c
