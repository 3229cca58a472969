"""The typed schema of params.yaml, one module per section, validated before any stage does work.

A stage loads only the sections it reads (`base.load(pretrain=PretrainParams, ...)`), so that editing one section's
schema invalidates that stage and its descendants only. `python -m lifecycle.params [params.yaml]` validates the
whole file (`schema.Params`) and prints every problem, one per line.
"""
