"""shopper_profiles: e-commerce user profiling on a Delta lakehouse."""

__version__ = "0.1.0"
