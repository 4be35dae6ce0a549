import sys

from nst_fast.cli import main

sys.exit(main())
