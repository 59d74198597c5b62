"""Data: records -> conversations -> tokens and pixels -> batches."""
