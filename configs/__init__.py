"""Experiment configs (ml_collections). ``base.py`` holds the defaults; experiments override a few fields."""
