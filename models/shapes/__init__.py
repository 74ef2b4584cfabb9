"""The shapes world: a procedural dataset, the small SD-1.x-style backbone trained on it, and its judge."""
