"""``python -m fairsynth ...`` is the ``fairsynth`` command."""

import sys

from fairsynth.app.cli import main

sys.exit(main())
