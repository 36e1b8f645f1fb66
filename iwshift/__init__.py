"""iwshift: importance weighting under dataset shift, reproduced and extended.

One home per concern:
    config   validation of user input and command-line overrides of script constants
    data     synthetic 2-D generators (and CIFAR-10 loading)
    shifts   label-shift / imbalance builders and importance weights
    models   model definitions and parameter initialisation
    losses   importance-weighted losses (two normalisations)
    sgd2d    the fused SGD kernel that trains many tiny 2-D models at once
    metrics  accuracies, predicted fractions, boundary angles, per-class gradient norms
    results  atomic writes, manifests, tidy tables
    plots    figures from tidy tables
    synthetic  the 2-D study composed from the rooms above
"""

__version__ = "0.1.0"
