"""Shared: features as of a cutoff, the preprocessing workflow, encoding and model inputs.

Used offline (dataset, training, evaluation) and online (Triton steps, the event updater),
so that both compute every feature with the same code. Nothing is imported here.
"""
