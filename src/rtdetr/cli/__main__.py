"""`python -m rtdetr.cli ...` (what `torchrun -m rtdetr.cli train ...` runs)."""
import sys

from rtdetr.cli.app import main

sys.exit(main())
