"""configs/ holds experiment files read by path (``stepwise sample --config configs/digits_gmm.py``);
it is not an importable package."""
raise ModuleNotFoundError("configs is not a package: pass experiment files by path "
                          "(`--config configs/<file>.py`, or stepwise.cli.defaults.config_from_file)",
                          name="configs")
