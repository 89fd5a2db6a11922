"""Exploring: the widget-free session and the scheduler that answers a control first."""
