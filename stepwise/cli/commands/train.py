"""`stepwise train`: train a Flax denoiser (UNet or MLP) on a dataset; resumes from the workdir.

The training fields live in ``config.train`` (``stepwise.training.TrainOptions``, built here from the
config); the noise schedule is ``config.schedule``.
"""
from __future__ import annotations

import argparse
import os
import time

EXAMPLE = """examples:
  stepwise train --config configs/digits_unet_small.py --workdir runs/digits_small
  stepwise train --config configs/fashion_unet_small.py --workdir runs/fashion_small

Run the same command again to resume from the latest checkpoint in --workdir. The trained model
loads with `stepwise.training.load_denoiser(WORKDIR)` or `model.kind = "checkpoint"` in a config.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from stepwise.cli.runtime import config_parser

    p = config_parser(subparsers, "train", "train a UNet/MLP denoiser (resumable)", EXAMPLE,
                      "run directory (created; resumed if it holds a checkpoint)",
                      description="Train a Flax denoiser on digits, Fashion-MNIST, an .npz or an image folder.")
    p.add_argument("--steps", type=int, default=None, help="override config.train.steps")
    return p


def run(args: argparse.Namespace) -> int:
    from stepwise.cli.options import train_options
    from stepwise.training import load_training_data, train

    config = args.config
    workdir = getattr(args, "workdir", None) or config.get("workdir") or os.path.join(
        "runs", "train-" + time.strftime("%Y%m%d-%H%M%S"))
    opts = train_options(config.train)
    if getattr(args, "steps", None):
        opts = opts.replace(steps=int(args.steps))
    data, labels = load_training_data(opts)
    if opts.num_classes and labels is None:
        raise ValueError(f"train.dataset: {opts.dataset!r} has no labels; set train.num_classes = 0")
    result = train(data, opts, workdir, labels=labels if opts.num_classes else None,
                   schedule=config.get("schedule", "vp_linear"))
    print(f"trained to step {result.step}: last loss {result.last_loss:.4f}, held-out loss "
          f"{result.eval_loss:.4f}, {result.seconds:.1f} s of steps; workdir {os.path.abspath(workdir)}")
    return 0
