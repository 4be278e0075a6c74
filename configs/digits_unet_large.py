"""The `large` UNet preset on 16x16 bundled digits (the small config with a bigger network).

Command:  stepwise train --config configs/digits_unet_large.py --workdir runs/digits_unet_large
"""
from pathlib import Path

from stepwise.cli.defaults import config_from_file


def small_config():
    return config_from_file(Path(__file__).with_name("digits_unet_small.py"))


def get_config():
    c = small_config()
    c.train.preset = "large"
    c.train.steps = 3000
    c.train.batch_size = 32
    return c
