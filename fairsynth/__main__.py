"""``python -m fairsynth ...`` is the ``fairsynth`` command."""

import sys

from fairsynth.cli import main

sys.exit(main())
