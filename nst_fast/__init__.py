"""nst-fast: fast neural style transfer in the manner of Johnson et al. (2016)."""

__version__ = "0.1.0"
