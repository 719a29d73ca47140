"""The PQA model: what ``pqtrain`` writes and ``pqcompile`` reads, imported by both and importing neither.

- :mod:`pqmodel.model`: the saved-model format (``.pt``: save, load and validation, weights-only loading) and the
  architecture -> torch module builder (:func:`pqmodel.model.build`, :class:`pqmodel.model.PQNet`);
- :mod:`pqmodel.layers`: the product-quantized layers (:class:`pqmodel.layers.PQLinear`,
  :class:`pqmodel.layers.PQConv2d`);
- :mod:`pqmodel.data`: the data sets (sklearn digits, and CIFAR-10, EMNIST, Speech Commands from a local directory).
"""
