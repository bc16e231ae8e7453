"""Hydra config tree, shipped inside the package as ``mmrl.configs``."""
