"""Offline: training loops (Two-Tower, rankers), ranker example mining, the encoded dataset."""
