from lifecycle.core import run
from lifecycle.serving.cli import main

# uvicorn shuts the server down gracefully on SIGTERM, then raises it again: dying of it then ends the process at
# once, where unwinding (the stages' way) would spend 1.5 s in Python's final garbage collection
run(main, sigterm_unwinds=False)
