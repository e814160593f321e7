"""Experiments built on the library: the learning study (learning_study.py)."""
