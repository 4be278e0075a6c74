"""Searching a solver schedule for the exact digits mixture (64 dims) at a fixed NFE.

Command:  stepwise search --config configs/search_digits_gmm.py --config.nfe=5
"""
from stepwise.cli.defaults import get_config as base_config


def get_config():
    c = base_config()
    c.model.components = 10
    c.nfe = 5
    return c
