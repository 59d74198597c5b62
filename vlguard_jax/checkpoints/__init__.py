"""Checkpoints, layer 1 (above models): converted checkpoints (`converted`), training runs written
(`training`, orbax's manager) and read as models (`runs`), what a checkpoint path is (`ref`), and
loading a model for use (`loading`). Evaluation and conversion read checkpoints only through
here, never through `train/`."""
