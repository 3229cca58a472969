from lifecycle.core import run
from lifecycle.serving.app import main

run(main)
