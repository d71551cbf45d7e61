"""phasediag: exact phase diagrams of training regimes for two-layer linear networks."""

__version__ = "0.1.0"
