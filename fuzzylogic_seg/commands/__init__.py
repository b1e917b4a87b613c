"""The subcommands of `fuzzyseg` (each module: register(subparsers), its handlers)."""

# The --classes option of every command that reads a data set in VOC layout.
CLASSES_HELP = ("VOC layout: the data set's classes, a comma list (mug,spoon) or a file (labelmap.txt "
                "format or one name a line); background is class 0, prepended when not first. "
                "Default: labelmap.txt in the VOC2012 folder if there is one, else the 21 VOC classes")
FIXED_CLASSES = "; REFUGE's are fixed"  # (why --classes is refused for REFUGE)


def voc_only(kind: str, flag: str, given, why: str = "") -> None:
    """A flag that only a data set in VOC layout takes, given for another kind: a ConfigError."""
    if given and kind != "voc":
        from ..errors import ConfigError

        raise ConfigError(f"{flag} is for data sets in Pascal VOC layout (voc){why}")
