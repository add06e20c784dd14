"""CDS Hooks 2.0 protocol layer: wire models, discovery, invocation, prefetch, feedback, auth.

Knows nothing about billing; the therapy plugin declares services on top of it.
"""
