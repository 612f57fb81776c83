"""streamrec: Kafka clicks -> SASRec session encoder (ONNX Runtime) -> FAISS -> Redis.

The code is split by concern:

* :mod:`streams`  decides *when* (Faust app, topics, session table, agents);
* :mod:`serving`  computes and stores (bundles, encoder, index, Redis);
* :mod:`training` learns (data, models, evaluation, export);
* :mod:`streamrec` lies below all three (settings, errors, the click event and
  session rules, Kafka clients, shared helpers) and drives them from the top
  (the CLI, the demo, the worker-process harness).
"""

__version__ = "0.2.0"
