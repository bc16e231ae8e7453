"""Fusion feature extractors for SB3 policies (image encoders, text encoders, fusion modules)."""
