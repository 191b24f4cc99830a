class SearchError(Exception):
    """A problem the user must fix; the CLI prints its one-line message and exits non-zero."""
