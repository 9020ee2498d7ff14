"""The errors vitaudio raises on input a user can fix.

Library code raises them with a message that names the file or option and what to do; only a command's `main()`
turns one into a single line on stderr and exit status 2. The stage-specific errors (`AudioDecodeError`,
`LayoutError`, `CheckpointError`, `InputError`, ...) all derive from `VitaudioError`, so one `except` catches them.
"""


class VitaudioError(Exception):
    """Bad input, a bad option or a bad file: the message says which, and the fix."""


class ConfigError(VitaudioError, ValueError):
    """A training option (a flag, or a field of `TrainConfig`) is out of range or contradicts the data."""


class RunDirError(VitaudioError):
    """A run directory cannot be started or resumed: not empty, or missing what `--resume` needs."""
