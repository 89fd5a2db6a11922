"""Course: exercises and the classroom."""
