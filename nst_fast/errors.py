"""The one exception type whose message is shown to users as is, without a traceback."""


class NstFastError(Exception):
    """A problem with the user's input (a file, an option) that the message explains."""
