"""vdc runtime: builds a virtual data center on one Linux host."""

__version__ = "0.1.0"
