"""`python -m processor.cli`: what the `processor` console script runs (the KCL properties use it)."""
import sys

from processor.cli import main

sys.exit(main())
