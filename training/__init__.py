"""Training: data splits, base-encoder build, fine-tuning, evaluation, model card."""
