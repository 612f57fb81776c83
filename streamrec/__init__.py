"""streamrec: Kafka clicks -> SASRec session encoder (ONNX Runtime) -> FAISS -> Redis.

The code is split by concern:

* :mod:`streams`  decides *when* (Faust app, topics, session table, agents);
* :mod:`serving`  computes and stores (bundle, encoder, index, rerank, Redis);
* :mod:`training` learns (data, models, evaluation, export);
* :mod:`streamrec` glues them together (settings, CLI, local services).
"""

__version__ = "0.1.0"
