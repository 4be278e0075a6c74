"""Denoisers: callables ``model(x, t, cond=None)`` that state their prediction type and cost."""
from denoisers.base import (PREDICTIONS, Converted, Denoiser, check_prediction, convert,
                            from_x0_eps, to_x0_eps, x0_eps)
from denoisers.gmm import GaussianMixture, digits_gmm, fit_mixture, load_digits_data

__all__ = ["PREDICTIONS", "Denoiser", "Converted", "check_prediction", "convert", "to_x0_eps",
           "from_x0_eps", "x0_eps", "GaussianMixture", "digits_gmm", "fit_mixture", "load_digits_data"]
