"""``python -m pigeon``: the ``pigeon`` command (the server starts its SMTP workers this way)."""

import sys

from pigeon.admin.cli import main

sys.exit(main())
