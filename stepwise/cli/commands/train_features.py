"""`stepwise train-features`: train the small-domain CNN whose penultimate layer is a feature space."""
from __future__ import annotations

import argparse

from stepwise.data import DATASETS, load_dataset

EXAMPLE = """examples:
  stepwise train-features --data digits --out runs/features/digits
  stepwise train-features --data fashion_mnist --out runs/features/fashion_mnist --steps 3000
  stepwise evaluate --samples s.npz --data digits --features digits --feature-net runs/features/digits
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train-features", help="train the domain CNN used for --features digits|fashion_mnist",
        description="Train a small CNN classifier (Adam, cosine decay) on a bundled grayscale "
                    "data set and save it (orbax) with its config; its penultimate layer is the "
                    "feature space for FID-like distances on small domains.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=DATASETS, help="training data set")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--learning-rate", type=float, default=2e-3, help="peak Adam learning rate")
    p.add_argument("--feature-dim", type=int, default=128, help="feature dimension (default 128)")
    p.add_argument("--image-size", type=int, default=None,
                   help="train on the data resized to this square size (8, 16, 28 or 32)")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
    return p


def run(args: argparse.Namespace) -> int:
    import jax

    from stepwise import evaluation as ev

    train = load_dataset(args.data, "train", args.image_size)   # seeded, disjoint splits
    test = load_dataset(args.data, "test", args.image_size)
    net = ev.train_feature_net(*train, key=jax.random.key(args.seed), steps=args.steps,
                               batch_size=args.batch_size, learning_rate=args.learning_rate,
                               feature_dim=args.feature_dim)
    acc = ev.classifier_accuracy(net, *test)
    path = ev.save_feature_net(args.out, net)
    losses = net.losses
    print(f"trained {args.data} CNN {net.image_shape}: loss {losses[:10].mean():.3f} -> "
          f"{losses[-50:].mean():.3f} over {args.steps} steps; held-out accuracy {acc:.4f} "
          f"(n={len(test[1])})")
    print(f"wrote {path}")
    return 0
