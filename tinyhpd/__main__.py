import sys

from tinyhpd.cli import main

sys.exit(main())
