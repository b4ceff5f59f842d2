"""`python -m alis_training ...` is `alis train ...` (also what torchrun launches:
`torchrun ... -m alis_training`; `python -m training` from a checkout without install)."""
import sys

from alis_core.entry import tune_process_memory

tune_process_memory()  # this process is the trainer's own: tune malloc and huge pages before torch loads

from .cli import main  # noqa: E402

sys.exit(main())
