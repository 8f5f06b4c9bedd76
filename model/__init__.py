"""The transformer, its tokenizer, presets, training and checkpoints."""
