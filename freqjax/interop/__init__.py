"""Models trained elsewhere: PyTorch and safetensors checkpoints read without PyTorch
(`torch_pickle`, `safetensors_io`), mapped onto freqjax's Flax models (`convert`), and written
as a workdir that every analysis launcher reads (`importer`)."""
