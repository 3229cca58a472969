"""llm-lifecycle's library: the shared code that the DVC stages in stages/ call. It never imports a stage."""
