"""The functions a search tries first."""

#: The reference's baselines, tried first (those with an equivalent in the space).
DEFAULT_BASELINES = (
    "elu(x)",
    "relu(x)",
    "selu(x)",
    "sigmoid(x)",
    "softplus(x)",
    "softsign(x)",
    "swish(x)",
    "tanh(x)",
)
