"""The `large` UNet preset on Fashion-MNIST (32x32, class-conditional with a null class for CFG).

Command:  stepwise train --config configs/fashion_unet_large.py --workdir runs/fashion_unet_large

Meant for an accelerator (a 2-core CPU does ~0.56 steps/s at batch 32; benchmarks/RESULTS_denoisers.md).
"""
from configs.fashion_unet_small import get_config as small_config


def get_config():
    c = small_config()
    c.train.preset = "large"
    c.train.steps = 50000
    return c
