"""Review: the comparison of two runs (`python -m lifecycle.review.compare`) and the report stage's rendering."""
