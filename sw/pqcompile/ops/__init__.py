"""The op handlers: one module per op kind (docs/architecture.md, "Where a change goes"). Importing this
package registers them all; :func:`of` and :func:`for_layer` find them."""

from . import add, batchnorm, flatten, pool, pq, relu  # noqa: F401  (each registers its handler)
from .base import OpHandler, QuantContext, for_layer, layer_types, of, register

__all__ = ["OpHandler", "QuantContext", "for_layer", "layer_types", "of", "register"]
