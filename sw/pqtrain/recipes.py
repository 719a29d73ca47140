"""The training recipe of each data set: the defaults of ``pqtrain train --data NAME`` (every option given on
the command line overrides its field), also usable from Python (``train_pipeline(arch, data, RECIPES[name])``).

- ``digits``: :class:`pqtrain.train.TrainConfig`'s defaults (chosen on validation, docs/training.md).
- ``cifar10``: ResNet-20's standard float recipe (He et al. 2016, as commonly reproduced): SGD with momentum
  0.9, weight decay 5e-4, batch 128, learning rate 0.1 with a cosine schedule (to 5% of it) over 200 epochs,
  pad-4 random crop + horizontal flip; a 45k / 5k train / validation split (``val_fraction`` 0.1) for model
  selection; then PQ conversion (k-means on the inputs of 1024 training images), 40 epochs of fine-tuning
  (``ste``, Adam 1e-3, no weight decay, distillation from the float model) with matrix-product distances
  (``fast_dist``), then 10 epochs of 8-bit QAT (Adam 1e-4; batch norm frozen and folded, residual adds and
  pooling fake-quantized; epoch selection on the integer model's accuracy on 1,000 validation images). Not
  tuned here (no CIFAR-10 and no GPU on the machine that wrote it): docs/training.md says what it is expected
  to reach.
"""

from __future__ import annotations

from .train import TrainConfig

RECIPES: dict[str, TrainConfig] = {
    "digits": TrainConfig(),
    "cifar10": TrainConfig(
        dataset="cifar10", float_epochs=200, float_lr=0.1, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
        batch_size=128, augment=True, val_fraction=0.1, pq_epochs=40, pq_lr=1e-3, pq_weight_decay=0.0,
        qat_bits=8, qat_epochs=10, qat_lr=1e-4, qat_val_images=1000, kmeans_images=1024, fast_dist=True,
        calib="max"),
}

DEFAULT_WORKERS: dict[str, int] = {"digits": 0, "cifar10": 4}  # DataLoader worker processes per training process
