"""``python -m shared.sandbox [--port N] …``: the sandbox without the rest of the CLI."""

import sys

from shared.sandbox.command import main

sys.exit(main())
