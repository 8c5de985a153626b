"""The one exception type for problems the user can fix (a path, a file, a config key).

Entry points print its message without a traceback and exit with status 2.
"""


class UserError(Exception):
    """A bad input whose message names the file or key and says what to do."""
