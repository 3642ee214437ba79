"""musicrec: a reference pipeline for content-based music recommendation.

Stages (one module each, run by DVC through the ``musicrec`` command): ``synthesize``,
``validate``, ``features``, ``split``, ``baselines``, ``wmf``, ``evaluate``, ``report``.
"""

__version__ = "0.1.0"
