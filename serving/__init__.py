"""Turn item sequences into ranked lists, and store/read them.

Pure and synchronous: nothing here knows about Kafka.
"""
