"""PromptCanvas application library: everything here ships to Lambda."""

__version__ = "0.1.0"
