"""The study's CNN and everything it varied, as one define-by-run space."""
from .spaces import full_space


def suggest(p):
    return full_space(p, "cnn")
