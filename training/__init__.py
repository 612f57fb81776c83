"""Learning models offline: data, models, training, evaluation, export. Needs the `train` extra."""
