import sys

from ssmax_tiny.cli import main

sys.exit(main())
