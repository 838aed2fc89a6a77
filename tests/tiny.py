"""Tiny, randomly initialised models and small datasets built offline, for fast tests."""

from __future__ import annotations

from bench.testing import tiny_bert as make_tiny_bert  # one builder for the kit and the tests
from bench.testing import tiny_sentiment_csv as make_sentiment_csv

__all__ = ["make_sentiment_csv", "make_tiny_bert"]

