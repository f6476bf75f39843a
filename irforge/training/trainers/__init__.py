"""One module per trainer, each defining ``TRAINER`` (see :mod:`irforge.training.registry`)."""
