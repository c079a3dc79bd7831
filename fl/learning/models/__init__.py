"""Model adapters: one class per model, registered by name in ``MODELS``.

Adding a model is one adapter class (a subclass of ``ModelAdapter`` with a
``name``) in one of these modules; the config, the CLI and the dashboard
offer it from the registry.
"""

from fl.learning.models import linear, neural, bayes, whole, gbdt  # noqa: F401, I001 - importing registers them, in menu order
from fl.learning.models.base import (
    MODELS, Hyper, ModelAdapter, NamedArrays, get_model, n_outputs, phantom_rows, validate_hyperparameters,
)

__all__ = ["MODELS", "Hyper", "ModelAdapter", "NamedArrays", "get_model", "n_outputs", "phantom_rows",
           "validate_hyperparameters"]
