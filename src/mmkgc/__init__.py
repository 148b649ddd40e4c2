"""mmkgc: multi-modal knowledge graph completion.

The data flows one way: triples + raw modalities -> feature tables -> entity representations ->
fusion -> scorer -> losses (training) / ranks (evaluation).  See ``docs/architecture.md``.
"""

__version__ = "0.1.0"

from mmkgc.errors import MMKGCError  # noqa: E402

__all__ = ["MMKGCError", "__version__"]
