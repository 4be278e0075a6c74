"""The `small` UNet preset on Fashion-MNIST (32x32, class-conditional with a null class for CFG).

Command:  stepwise train --config configs/fashion_unet_small.py --workdir runs/fashion_unet_small

Sized for a 2-core CPU: the network runs on 2x2 patches (16x16x4, ~29 MFLOP per sample, ~7.6 steps/s
at batch 64), and predicts v with the plain v-MSE loss (Salimans & Ho 2022), whose weight (SNR + 1
in eps terms) keeps the x0 estimate accurate at high noise. 6000 steps take ~13 minutes there and
give recognisable class-conditional samples (benchmarks/RESULTS_denoisers.md); eps prediction with
the eps-MSE loss, in the same budget, does not. On an accelerator raise ``train.steps``.
"""
from pathlib import Path

from stepwise.cli.defaults import config_from_file


def digits_config():
    return config_from_file(Path(__file__).with_name("digits_unet_small.py"))


def get_config():
    c = digits_config()
    c.train.dataset = "fashion_mnist"
    c.train.image_size = 32           # 28x28 padded with background to 32x32
    c.train.num_classes = 10          # class-conditional, null class 10 for guidance
    c.train.network_overrides.patch_size = 2
    c.train.prediction = "v"
    c.train.loss_weighting = "uniform"
    c.train.steps = 6000
    c.train.batch_size = 64
    return c
