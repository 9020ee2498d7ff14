"""What every command's `--help` shares: each option's default shown, once."""
from __future__ import annotations

import argparse


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help unless the help already says its default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        no_default = any(action.default is value for value in (None, argparse.SUPPRESS, False))
        if "default" not in help_text and not no_default and action.option_strings:
            help_text += " (default: %(default)s)"
        return help_text
