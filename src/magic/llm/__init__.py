"""Stage 1, strategy inference with motivations: prompts and templates, motivation collection, LoRA SFT, the prompt encoding rule, inference, shards, the strategy report."""
