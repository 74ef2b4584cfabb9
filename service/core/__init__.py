"""The service's foundations, imported by every other part: settings, logs, metrics, the error base and its HTTP
mapping.
"""
