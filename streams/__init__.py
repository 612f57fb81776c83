"""The Faust application: decides *when* things happen.

``streams.app:app`` is importable for ``faust -A streams.app worker``.
"""
