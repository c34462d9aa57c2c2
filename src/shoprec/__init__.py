"""shoprec: an e-commerce recommender (Two-Tower retrieval, DLRM ranking, FAISS, Triton, Feast)."""

__version__ = "0.1.0"
