"""planner: find how to split a large-model training job across a GPU cluster."""

__version__ = "0.1.0"
