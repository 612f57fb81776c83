"""Export: the ONNX bundle a worker loads (encoder, index, vocabulary, manifest)."""
