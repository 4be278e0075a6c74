"""`stepwise convert-inception`: FID Inception weights .pth -> .npz (so evaluation needs no torch)."""
from __future__ import annotations

import argparse
import sys

EXAMPLE = """example:
  stepwise convert-inception pt_inception-2015-12-05-6726825d.pth inception_fid.npz
  stepwise evaluate --samples s.npz --ref ref.npz --features inception --inception-weights inception_fid.npz

The .pth is pytorch-fid's port of the 2015-12-05 TensorFlow Inception graph; it is read with
torch (needed only for this conversion) and checked against the network before writing.
Nothing is downloaded.
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert-inception", help="convert pt_inception-2015-12-05-*.pth to a torch-free .npz",
        description="Convert the FID Inception-v3 weight file to .npz for evaluation/.",
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pth", help="pt_inception-2015-12-05-*.pth")
    p.add_argument("npz", help="output .npz path")
    return p


def run(args: argparse.Namespace) -> int:
    from stepwise.evaluation import convert_inception

    try:
        path = convert_inception(args.pth, args.npz)
    except (ValueError, FileNotFoundError, ImportError) as err:
        print(f"stepwise convert-inception: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
