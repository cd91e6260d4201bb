"""MAGIC reproduction: the data layer, prompts, the generator and its decoding."""
