"""The package version, in a module of its own so library code can read it without importing the package root
(whose lazy Python API sits at the top of the layering)."""

__version__ = "0.1.0"
