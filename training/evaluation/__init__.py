"""Evaluation protocols: full-ranking HR/NDCG, whole-list metrics, exported
bundles scored as served, and the cold-start protocol."""
