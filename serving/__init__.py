"""Turn item sequences into ranked lists, store and read them, and keep the bundles that do it.

Computing a list (:mod:`serving.funnel`, :mod:`serving.encoder`,
:mod:`serving.index`) is pure and synchronous: it knows nothing about Kafka.
Bundles are loaded and validated in :mod:`serving.bundle` and published in
:mod:`serving.registry` (which announces them on Kafka); lists are written to
Redis by :mod:`serving.redis_store` (async) and read by :mod:`serving.reader`.
"""
