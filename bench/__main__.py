"""python -m bench: the billing benchmark (bench/billing.py says what it measures)."""

import sys

from bench.billing import main

sys.exit(main())
