"""spanpool: session pools for Cloud Spanner's Python client."""

__version__ = "0.1.0"

__all__ = ["__version__"]
