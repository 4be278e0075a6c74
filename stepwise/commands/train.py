"""`stepwise train`: train a Flax denoiser (UNet or MLP) on a dataset; resumes from the workdir.

The lead's CLI parses ``--config FILE`` (ml_collections config_flags) and hands the resolved ConfigDict
as ``args.config`` plus ``args.workdir``. The training fields live in ``config.train``
(``configs/train_defaults.py``); the noise schedule is ``config.schedule``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

EXAMPLE = """examples:
  stepwise train --config configs/digits_unet_small.py --workdir runs/digits_small
  stepwise train --config configs/fashion_unet_small.py --workdir runs/fashion_small

Run the same command again to resume from the latest checkpoint in --workdir. The trained model
loads with `denoisers.train.load_denoiser(WORKDIR)` or `model.kind = "checkpoint"` in a config.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    from stepwise.runtime import config_parser

    p = config_parser(subparsers, "train", "train a UNet/MLP denoiser (resumable)", EXAMPLE,
                      "run directory (created; resumed if it holds a checkpoint)",
                      description="Train a Flax denoiser on digits, Fashion-MNIST, an .npz or an image folder.")
    p.add_argument("--steps", type=int, default=None, help="override config.train.steps")
    p.set_defaults(func=run)
    return p


def _config_with_train(config):
    from configs.train_defaults import train_defaults

    if "train" not in config or config.train is None:
        config.unlock() if hasattr(config, "unlock") else None
        config.train = train_defaults()
    return config


def run(args: argparse.Namespace) -> int:
    from denoisers.data import load_dataset
    from denoisers.train import train

    config = getattr(args, "config", None)
    if config is None:
        print("stepwise train: error: no config (pass --config FILE)", file=sys.stderr)
        return 2
    config = _config_with_train(config)
    tcfg = config.train
    if getattr(args, "steps", None):
        tcfg.steps = int(args.steps)
    workdir = getattr(args, "workdir", None) or config.get("workdir") or os.path.join(
        "runs", "train-" + time.strftime("%Y%m%d-%H%M%S"))
    try:
        data, labels = load_dataset(tcfg)
        if int(tcfg.num_classes) and labels is None:
            raise ValueError(f"dataset {tcfg.dataset!r} has no labels; set train.num_classes = 0")
        result = train(data, tcfg, workdir, labels=labels if int(tcfg.num_classes) else None,
                       schedule=config.get("schedule", "vp_linear"))
    except (ValueError, FileNotFoundError) as err:
        print(f"stepwise train: error: {err}", file=sys.stderr)
        return 2
    print(f"trained to step {result.step}: last loss {result.last_loss:.4f}, held-out loss "
          f"{result.eval_loss:.4f}, {result.seconds:.1f} s of steps; workdir {os.path.abspath(workdir)}")
    return 0
