"""Models and how they are fitted: SASRec and the two-tower encoder, BPR-MF and
popularity baselines, the ranker, the content blend's weight, the training loop."""
