"""The `large` UNet preset on Fashion-MNIST (32x32 on 2x2 patches, class-conditional, v prediction).

Command:  stepwise train --config configs/fashion_unet_large.py --workdir runs/fashion_unet_large

~9x the small preset per sample (XLA FLOPs); 2200 steps at batch 32 take ~14 minutes on a 2-core CPU
(~2.6 steps/s; benchmarks/RESULTS_denoisers.md). On an accelerator raise ``train.steps``.
"""
from pathlib import Path

from stepwise.cli.defaults import config_from_file


def small_config():
    return config_from_file(Path(__file__).with_name("fashion_unet_small.py"))


def get_config():
    c = small_config()
    c.train.preset = "large"
    c.train.steps = 2200
    c.train.batch_size = 32
    return c
