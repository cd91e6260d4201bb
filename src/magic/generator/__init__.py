"""Stage 2, the memory-enhanced BART generator: config, model (one forward), dataset and collator, records builder, training, checkpoints, data parallelism, beam search, evaluation."""
