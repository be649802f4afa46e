"""The two kinds of failure, grouped by what the consumer loop does next."""


class PermanentError(Exception):
    """Retrying cannot help (bad image, missing object, over a limit): dead-letter the message.

    `reason` is a short stable slug for metrics and the DLQ attribute; the message says why.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class TransientError(Exception):
    """May succeed later (throttling, network): let the message become visible again."""
