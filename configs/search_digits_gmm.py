"""Searching a solver schedule for the exact digits mixture (64 dims) at a fixed NFE.

Command:  stepwise search --config configs/search_digits_gmm.py --config.nfe=5
"""
from configs.base import get_config as base_config
from configs.search_defaults import search_defaults


def get_config():
    c = base_config()
    c.model.components = 10
    c.nfe = 5
    if "search" not in c:
        c.search = search_defaults()
    return c
