"""The one exception type the pipeline raises for problems a user can fix."""


class MusicrecError(Exception):
    """A problem with the input data, the params or the workspace, stated so a user can fix it.

    The command-line entry point prints the message without a traceback and exits with status 1.
    """
