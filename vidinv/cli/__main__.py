"""``python -m vidinv.cli``: the ``vidinv`` command."""

import sys

from vidinv.cli.app import main

sys.exit(main())
