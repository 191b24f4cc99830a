class DataError(ValueError):
    """Bad input data or options; the message is one line naming the file, folder or option."""
