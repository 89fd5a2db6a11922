"""Pruning: scores and criteria, the spec, masks onto a model, fine-tuning, slimming, export."""
