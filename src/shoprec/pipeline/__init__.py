"""Offline orchestration: one function per CLI step (``steps``) and the ranker comparison
(``compare``). The logic lives in ``data``, ``training``, ``evaluation`` and ``export``."""
