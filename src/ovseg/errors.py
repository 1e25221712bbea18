"""User-facing errors: the CLI prints their message as one line and exits with status 2."""


class OvsegError(Exception):
    """A mistake in what the user gave us (file, key, value), explained in one line."""


class ConfigError(OvsegError):
    """A config file or ``--opts`` override that does not fit the schema."""


class CheckpointError(OvsegError):
    """A checkpoint that is missing, truncated, unsafe or of another architecture."""


class ImageError(OvsegError):
    """An image file that cannot be used: missing, not decodable, or over ovseg's pixel limit."""
