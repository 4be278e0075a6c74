"""Training denoisers: the loop, losses, orbax checkpoints and metric writers (``loop``), configured by
one frozen :class:`TrainOptions`. The loop module loads on first use, so importing the options is cheap."""
from stepwise.training.options import TrainOptions

__all__ = ["TrainOptions", "train", "load_denoiser", "export_params", "diffusion_loss", "loss_weight",
           "sample_t", "make_writer", "load_training_data", "JsonlWriter", "TrainResult", "network_spec", "denoiser_from_spec",
           "trained_on"]


def __getattr__(name):
    if name in __all__:
        from stepwise.training import loop
        return getattr(loop, name)
    raise AttributeError(f"module 'stepwise.training' has no attribute {name!r}")
