"""freqjax: find and measure frequency shortcuts in image classifiers, in JAX/Flax.

Packages: `data` (synthetic generator, folder datasets, input pipeline, augmentation),
`models` (ResNet, VGG, AlexNet), `training` (data-parallel training, checkpoints, logs),
`spectral` (FFT primitives, masks, candidates, ADCS, DFM ranking), `evaluation` (inference,
shortcut test, learning dynamics), plus `artifacts`, `plotting`, `report` and `pipeline`.
"""

__version__ = "0.1.0"
