"""``python -m napari_smlm_diffusion.cli``."""

import sys

from . import main

sys.exit(main())
