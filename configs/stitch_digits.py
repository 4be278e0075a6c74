"""T-Stitch sweep + joint search on the exact digits benchmark: small = 1-component diagonal
mixture, large = the 10-component full mixture; DPM-Solver++(2M), NFE 10, logSNR nodes.

Command:  stepwise stitch --config configs/stitch_digits.py --workdir runs/stitch_digits
Trained pair (trained on the digits' train split; the held-out score uses the test split):
    stepwise stitch --config configs/stitch_digits.py --config.stitch.pair=checkpoints \
    --config.stitch.small_checkpoint=runs/bench-train/digits_unet_small_heldout \
    --config.stitch.large_checkpoint=runs/bench-train/digits_unet_large_heldout \
    --config.stitch.feature_net=runs/bench-train/features_digits16 --config.stitch.search_seeds=0,1,2
(the training directories come from benchmarks/train_denoisers.py; the full measured command,
joint-search settings included, is in benchmarks/RESULTS_stitching.md)
"""
from pathlib import Path

from stepwise.cli.defaults import config_from_file


def digits_gmm_config():
    return config_from_file(Path(__file__).with_name("digits_gmm.py"))


def get_config():
    c = digits_gmm_config()
    return c
