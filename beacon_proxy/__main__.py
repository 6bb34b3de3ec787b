"""``python -m beacon_proxy`` is ``beacon-proxy``."""

import sys

from beacon_proxy.cli.main import main

sys.exit(main())
