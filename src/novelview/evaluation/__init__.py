"""Evaluation building blocks: metrics, LPIPS, protocol, methods, 3D consistency, report.

The entry point is :func:`novelview.evaluate.evaluate` (and `novelview eval`); see docs/evaluation.md.
"""
