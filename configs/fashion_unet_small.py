"""The `small` UNet preset on Fashion-MNIST (32x32, class-conditional with a null class for CFG).

Command:  stepwise train --config configs/fashion_unet_small.py --workdir runs/fashion_unet_small

20000 steps at batch 128: meant for an accelerator; a 2-core CPU does ~1.65 steps/s at batch 64
(benchmarks/RESULTS_denoisers.md: 800 steps in 10 minutes there are not enough for useful samples).
"""
from configs.digits_unet_small import get_config as digits_config


def get_config():
    c = digits_config()
    c.train.dataset = "fashion_mnist"
    c.train.image_size = 32           # 28x28 padded with background to 32x32
    c.train.num_classes = 10          # class-conditional, null class 10 for guidance
    c.train.steps = 20000
    c.train.batch_size = 128
    return c
