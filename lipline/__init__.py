"""Lipline: talking-head localization pipeline."""

__version__ = "0.1.0"
