import sys

from rmaunet.cli import main

sys.exit(main())
