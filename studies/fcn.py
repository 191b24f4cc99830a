"""The study's fully convolutional net and everything it varied."""
from .spaces import full_space


def suggest(p):
    return full_space(p, "fcn")
