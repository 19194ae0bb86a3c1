"""Catalog and file I/O at the bottom of the package: tables by layer, and files beside saved models.

Nothing here knows a stage; every step above reads and writes through it.
"""
