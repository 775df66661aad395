"""Loads: load-step messages, the planner, the queue-triggered loader, queues and local runs."""
