"""leadsel: efficient, iterative, model-aware data selection for LLM instruction tuning."""
__version__ = "0.1.0"
