"""Datasets: the Dataset contract, NIfTI volumes, the phantom, MedMNIST, and named sources."""
