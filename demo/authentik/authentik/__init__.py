"""authentik-shaped fixture: the lines the seed patches, nothing of authentik itself."""

__version__ = "2026.2.0"
