"""`python -m vidshard ...` (also under torchrun: `torchrun ... -m vidshard train ...`)."""

import sys

from vidshard.cli import main

sys.exit(main())
