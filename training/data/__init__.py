"""Data: sequence files, synthetic sequences, item attributes, the clicks topic."""
