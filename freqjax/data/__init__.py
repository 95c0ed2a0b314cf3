"""Data: the synthetic generator (`synthetic`), folder scanning and decoding (`folder`), the
tensorflow-datasets builders (`builders`), preparing and reading datasets (`datasets`), the host
loader (`loader`) and on-device augmentation (`augment`, `autoaugment`)."""
