"""``python -m langneurons``."""

import sys

from langneurons.cli import main

sys.exit(main())
