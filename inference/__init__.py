"""Triton clients behind the planner's use of learned models, with heuristic fallbacks.

base.py: the one base (async gRPC, timeout, breaker, fallback metric); estimator.py: task
durations and failure probabilities; features.py: the task encoding shared with training.
"""
