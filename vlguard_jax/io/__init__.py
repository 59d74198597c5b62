"""Reading and writing, in one place: paths that may be in buckets and atomic writes (storage,
files: layer 0), converted checkpoints (converted), training workdirs read as models (runs), and
loading a model for use (loading). Evaluation and conversion read checkpoints and runs through
here, never through `train/`."""
