"""`python -m training ...` is `alis train ...` (also what torchrun launches: `torchrun ... -m training`)."""
import sys

from .cli import main

sys.exit(main())
