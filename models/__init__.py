"""Embedded models: the default backbone in diffusers layout, its dataset, judge and training recipe."""
