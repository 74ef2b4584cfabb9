"""Per-tenant adapters at run time: an upload parsed and validated against the backbone, and the cache of parsed
adapters.
"""
