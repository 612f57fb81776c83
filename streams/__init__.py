"""The Faust application: decides *when* things happen.

:mod:`streams.app` wires :mod:`streams.topics`, :mod:`streams.tables` and the
agents of :mod:`streams.agents`; ``streams.app:app`` is importable for
``faust -A streams.app worker``.
"""
