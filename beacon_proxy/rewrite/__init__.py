"""Rewrite stage: renders each recipient's copy of a message."""

from beacon_proxy.rewrite.step import Copy, RewriteStep, TraceStep, received_header

__all__ = ["Copy", "RewriteStep", "TraceStep", "received_header"]
