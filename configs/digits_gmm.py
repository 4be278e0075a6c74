"""Sampling the exact digits mixture (64 dims) with a preset solver.

Command:  stepwise sample --config configs/digits_gmm.py --config.solver=dpm_solver_pp --config.nfe=5
"""
from stepwise.cli.defaults import get_config as base_config


def get_config():
    c = base_config()
    c.model.components = 10
    c.solver = "dpm_solver_pp"
    c.order = 2
    c.nfe = 10
    c.discretization = "logsnr"
    return c
