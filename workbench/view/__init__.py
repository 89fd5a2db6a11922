"""Views: plots that take ``ax``, the figure, and the dashboard that copies values."""
