"""Spectral analysis: centred FFT primitives, frequency masks, DFM candidate sets, ADCS and
the DFM ranking engine. Layout everywhere: NHWC images, spectra and masks centred
(fftshift), index (H/2, W/2) = DC."""
