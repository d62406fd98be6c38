"""trade-stream: one Alpaca connection, many browser clients."""

__version__ = "0.1.0"
