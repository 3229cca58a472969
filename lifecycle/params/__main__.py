from lifecycle.core import run
from lifecycle.params.schema import main

run(main)
