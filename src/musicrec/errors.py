"""The one exception type the pipeline raises for problems a user can fix."""


class MusicrecError(Exception):
    """A problem with the input data, the params or the workspace, stated so a user can fix it.

    The command-line entry point prints the message without a traceback and exits with status 1.
    """


class PlayLogError(MusicrecError):
    """The play log has bad lines: it is unusable as a whole, and nothing is trained on it.

    Parameters
    ----------
    message : str
        What is wrong, naming the file and the first bad lines.
    bad_lines : int
        How many lines are bad.
    ge_result : dict
        great-expectations' results for the log (``reports/validation/ge_play_log.json``).
    """

    def __init__(self, message: str, bad_lines: int, ge_result: dict):
        super().__init__(message)
        self.bad_lines, self.ge_result = bad_lines, ge_result
