"""stepwise: few-step diffusion sampling in JAX (command line package)."""
__version__ = "0.1.0"
