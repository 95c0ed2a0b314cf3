"""Spectral analysis: centred FFT primitives, frequency masks, DFM candidate sets, ADCS, the
DFM ranking engine and the HFSS search on it. Layout everywhere: NHWC images, spectra and
masks centred (fftshift), index (H/2, W/2) = DC."""
