"""Spectral analysis: centred FFT primitives, frequency masks, DFM candidate sets, ADCS, the
DFM ranking engine, the HFSS search on it and the DFM search methods (`search`: exhaustive,
screened, coarse-to-fine, HFSS). Layout everywhere: NHWC images, spectra and masks centred
(fftshift), index (H/2, W/2) = DC."""
