import sys

from steerlens.audit import main

sys.exit(main())
