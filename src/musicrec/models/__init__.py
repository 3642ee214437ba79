"""Models. Each writes its output in the one format :mod:`musicrec.models.vectors` defines."""
