"""The ground floor: pure NumPy and the file system; imports nothing of the package."""
