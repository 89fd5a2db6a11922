"""Analysis: the evaluator and sparsity curves, sensitivity, budgets, saliency."""
