"""The ``memodag`` command-line interface (click + rich).

Only ``memodag.cli.main:main`` is an entry point; nothing in memodag's core imports this package.
"""
