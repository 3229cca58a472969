"""Review: the comparison of two runs (`python -m lifecycle.review.compare`), the report stage's rendering (report),
and the one plot renderer both use (plots: DVC's Vega-Lite specs of dvc.yaml's plots, drawn to PNG)."""
