"""`python -m steerlens.judges calibrate --judge NAME`: a judge against JBB's labels."""

from steerlens.judges.calibration import main

raise SystemExit(main())
