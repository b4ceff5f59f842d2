"""`python -m alis_core ...` is the `alis` command."""
import sys

from .cli import main

sys.exit(main())
