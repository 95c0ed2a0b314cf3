"""The analysis stages of a trained run, one module each (the pipeline only orders them):

    context   the trained model and its normalised test set; `cached`, the one protocol every
              stage uses (fingerprint check -> compute -> save on process 0 -> sync -> reload)
    adcs      analysis/adcs.npz       class-wise ADCS of the test set
    dfm       analysis/scores.npz, dfm.npz (and greedy.npz)   DFM ranking
    shortcut  analysis/shortcut.npz (+ shortcut_ood_<name>.npz, shortcut_dfms.npz)   the
              DFM-filtered test
    sensitivity  analysis/sensitivity.npz   Fourier sensitivity (input-gradient spectrum)
    heatmap   analysis/heatmap.npz    Fourier heat map (error per added Fourier basis)
    dynamics  analysis/dynamics.npz   learning dynamics from the training log
    figures   figures/*.png
    summary   summary.json's content

Each stage's `run(config, workdir, ctx=None)` holds the workdir's lock while it works.
"""
