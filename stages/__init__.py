"""DVC stages only: each module is the entry point of one stage of dvc.yaml (`python -m stages.<name>`)."""
