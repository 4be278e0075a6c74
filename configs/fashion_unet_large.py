"""The `large` UNet preset on Fashion-MNIST (32x32, class-conditional with a null class for CFG).

Command:  stepwise train --config configs/fashion_unet_large.py --workdir runs/fashion_unet_large
"""
from configs.fashion_unet_small import get_config as small_config


def get_config():
    c = small_config()
    c.train.preset = "large"
    c.train.steps = 50000
    return c
