"""Models: the one TensorFlow import, layer kinds, the channel graph, heads, builders, training, cost."""
