"""`python -m rmaunet`: the same command as `rmaunet` (rmaunet.cli quiets TensorFlow before importing anything)."""

import sys

from rmaunet.cli import main

sys.exit(main())
