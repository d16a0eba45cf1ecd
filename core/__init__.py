"""Shared building blocks: settings loading, database engine, errors, app scaffolding.

``core`` imports no other package of the project.
"""
