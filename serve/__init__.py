"""Entry points that run the model: the command line (later batch and app)."""
