"""Interoperability with other knowledge-graph libraries (PyKEEN: :mod:`mmkgc.interop.pykeen`)."""
