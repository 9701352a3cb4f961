"""python -m shmproc: run the demo (see shmproc/demo.py)."""
import sys

from .demo import main

sys.exit(main())
