"""musicrec: a reference pipeline for content-based music recommendation.

Stages (one module each, run by DVC through the ``musicrec`` command) and models are listed in
one place, :mod:`musicrec.registry`.
"""

__version__ = "0.1.0"
