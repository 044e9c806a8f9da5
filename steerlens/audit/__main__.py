"""`python -m steerlens.audit`: run (or resume) an audit from the command line."""

import sys

from steerlens.audit.run import main

sys.exit(main())
