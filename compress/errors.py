"""The one exception type that the CLI turns into a one-line message and exit status 2."""


class CompressError(Exception):
    """Bad input or a request this machine cannot serve; the message is shown to the user as is.

    Messages name the file (when there is one), the field and what was expected, on one line.
    """
