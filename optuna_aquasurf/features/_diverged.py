"""The error of a candidate whose probe is not finite."""


class DivergedError(ValueError):
    """The loss or a Kronecker factor of a candidate model is not finite."""
