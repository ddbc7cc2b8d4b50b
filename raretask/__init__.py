"""raretask: which model size and data mixture are needed before a rare or complex task gets learned, and why
smaller models fail at it. See README.md."""

__version__ = "0.1.0"
