"""`python -m hv ...` is the hv command."""
import sys

from hv.cli import main

sys.exit(main())
