"""Shared: model architectures and their files.

``modules`` (TorchRec-style arches), ``two_tower`` (query and item towers), ``dlrm``,
``rankers`` (Wide&Deep, DCN-v2, MLP, the ranker factory and files), ``trees`` (random forest,
LightGBM), ``text`` (MiniLM and open_clip text encoders). Training loops live offline in
``shoprec.training``. Nothing is imported here.
"""
