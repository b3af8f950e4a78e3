"""Built-in embedders: ``hashing`` (offline default) and ``openai`` (any compatible endpoint)."""
