"""`python -m alis_core ...` is the `alis` command."""
import sys

from .entry import main

sys.exit(main())
