"""`python -m vitaudio COMMAND ...`: the `vitaudio` command."""
import sys

from .cli import main

sys.exit(main())
