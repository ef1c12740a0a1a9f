"""What trained models say: evaluation, predictions, equivariance checks.

    evaluate      per-configuration Pearson tables of runs on a dataset (`equiglass evaluate`)
    predict       predictions to disk (`equiglass predict`)
    equivariance  symmetry checks of a model (`equiglass check-equivariance`)
    features      the first layer's invariant features vs classic structural descriptors
"""
