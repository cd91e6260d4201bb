"""Stage 2, the memory-enhanced BART generator: config, model, grouped BART layers, dataset and collator, records builder, training, checkpoints, data parallelism, beam search, evaluation."""
