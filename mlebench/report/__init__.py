"""Formatting of stored results: exports (CSV, JSON), console tables; later LaTeX and HTML.

Everything here reads the results store and never writes to it.
"""
