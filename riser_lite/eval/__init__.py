"""Evaluation: ranking metrics with intervals, reference baselines, SASRec, latency."""
