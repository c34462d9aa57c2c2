"""Shared: candidate retrieval and scoring, run offline in evaluation and online in Triton.

``index`` (FAISS ANN indexes), ``candidates`` (ANN top-n + history), ``scoring`` (ranker
scores, top-k), ``neighbours`` (the item-to-item text neighbour table). Nothing is imported
here.
"""
