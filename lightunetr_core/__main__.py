import sys

from lightunetr_core.cli import main

sys.exit(main())
