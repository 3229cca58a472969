from lifecycle.core import run
from lifecycle.serving.cli import main

run(main)
