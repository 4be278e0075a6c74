"""The `large` UNet preset on 16x16 bundled digits (the small config with a bigger network).

Command:  stepwise train --config configs/digits_unet_large.py --workdir runs/digits_unet_large
"""
from configs.digits_unet_small import get_config as small_config


def get_config():
    c = small_config()
    c.train.preset = "large"
    c.train.steps = 3000
    c.train.batch_size = 32
    return c
