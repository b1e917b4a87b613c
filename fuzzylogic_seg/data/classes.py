"""The class list of a data set in Pascal VOC layout (docs/DATA.md "The layouts read").

Where it comes from, first found wins:

1. an explicit list (``--classes mug,spoon``, ``--classes FILE``, or the
   ``classes:`` key of a run config: a list of names, a comma list, or a file);
2. ``labelmap.txt`` in the VOC2012 folder (CVAT's and datumaro's Pascal VOC
   export);
3. the 21 Pascal VOC classes.

A class file is either labelmap format (``# label:color_rgb:parts:actions``,
then ``name:r,g,b:parts:actions`` lines) or plain (one name per line); ``#``
starts a comment. Background is index 0: a list that does not start with
``background`` gets it prepended. Duplicates, empty names and names with a
comma, a colon, a tab or a control character are errors naming the file and
line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Type, Union

from ..errors import ConfigError, DatasetError
from ..io import VOC_CLASSES

LABELMAP = "labelmap.txt"
BACKGROUND = "background"
VOC_VOID_RGB = (224, 224, 192)  # VOC's colour of void (255) in colour-coded masks
RGB = Tuple[int, int, int]


@dataclass(frozen=True)
class ClassList:
    """Class names (index = label value), their colours where a labelmap gave them,
    and where the list came from (a file path, "--classes" or "VOC")."""

    names: Tuple[str, ...]
    colors: Tuple[Optional[RGB], ...] = ()
    source: str = "VOC"
    prepended: bool = False  # background was added in front

    def __len__(self) -> int:
        return len(self.names)

    @property
    def is_voc(self) -> bool:
        """The 21 Pascal VOC classes: everything behaves as before this option existed."""
        return tuple(self.names) == tuple(VOC_CLASSES)

    @property
    def index(self) -> Dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def color_index(self) -> Dict[RGB, int]:
        """RGB -> class index for colour-coded masks (VOC's void colour -> 255)."""
        out = {c: i for i, c in enumerate(self.colors) if c is not None}
        out.setdefault(VOC_VOID_RGB, 255)
        return out

    @property
    def has_colors(self) -> bool:
        return bool(self.colors) and any(c is not None for c in self.colors)

    def palette(self) -> Optional[list]:
        """A PNG palette (256 flattened RGB) with the labelmap's colours over VOC's, or
        None when the list has no colours (the VOC palette is used)."""
        if not self.has_colors:
            return None
        from ..io import voc_palette

        pal = voc_palette()
        for i, c in enumerate(self.colors):
            if c is not None:
                pal[3 * i: 3 * i + 3] = list(c)
        return pal

    def describe(self) -> str:
        where = {"VOC": "the Pascal VOC classes"}.get(self.source, self.source)
        extra = " (background prepended as class 0)" if self.prepended else ""
        return f"{len(self.names)} classes from {where}{extra}: {', '.join(self.names)}"


VOC = ClassList(tuple(VOC_CLASSES))

def announce(class_list: ClassList, print_fn=print) -> None:
    """Say where a data set's classes came from (nothing for the VOC default)."""
    if class_list.source != "VOC":
        print_fn(f"classes: {class_list.describe()}")


# ------------------------------------------------------------------ parsing
_BAD_CHARS = {",": "a comma", ":": "a colon", "\t": "a tab"}


def _check_name(name: str, fail) -> None:
    if not name:
        fail("empty class name")
    for ch, what in _BAD_CHARS.items():
        if ch in name:
            fail(f"class name {name!r} contains {what}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        fail(f"class name {name!r} contains a control character")


def _parse_color(text: str, fail) -> Optional[RGB]:
    text = text.strip()
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        rgb = tuple(int(p) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
        fail(f"colour {text!r} is not r,g,b with values 0..255")
    return rgb  # type: ignore[return-value]


def _error(error: Type[Exception], source: str, where: Optional[str], msg: str) -> Exception:
    """A DatasetError names its file as the codebase does ("FILE: line N: ..."); a
    ConfigError reads "FILE:N: ..." ("--classes, name K: ..." for a given list)."""
    if error is DatasetError:
        return DatasetError(f"{where}: {msg}" if where else msg, source)
    if not where:
        place = source
    elif where.startswith("line "):
        place = f"{source}:{where.split()[-1]}"
    else:
        place = f"{source}, {where}"
    return error(f"{place}: {msg}")


def build_class_list(entries: Sequence[Tuple[str, Optional[RGB], str]], source: str,
                     error: Type[Exception] = ConfigError) -> ClassList:
    """(name, colour, where) entries -> a checked ClassList; `where` ("line N" or
    "name K") says where each came from in `source`, for the errors."""
    seen: Dict[str, str] = {}
    names, colors = [], []
    for name, color, where in entries:
        def fail(msg, where=where):
            raise _error(error, source, where, msg)

        _check_name(name, fail)
        if name in seen:
            fail(f"duplicate class name {name!r} (also {seen[name]})")
        seen[name] = where
        if name == BACKGROUND and names:
            fail(f"{BACKGROUND!r} must be the first class (index 0)")
        names.append(name)
        colors.append(color)
    if not names:
        raise _error(error, source, None, "no class names")
    if names == [BACKGROUND]:
        raise _error(error, source, None, "only 'background': name the object classes too")
    prepended = names[0] != BACKGROUND
    if prepended:
        names.insert(0, BACKGROUND)
        colors.insert(0, (0, 0, 0) if any(c is not None for c in colors) else None)
    if all(c is None for c in colors):
        colors = []
    else:
        used: Dict[RGB, str] = {}
        for n, c in zip(names, colors):
            if c is None:
                continue
            if c in used:
                raise _error(error, source, seen.get(n), f"classes {used[c]!r} and {n!r} have the "
                             f"same colour {','.join(map(str, c))}")
            used[c] = n
    if len(names) > 255:
        raise _error(error, source, None,
                     f"{len(names)} classes; at most 255 fit a label PNG (255 is void)")
    return ClassList(tuple(names), tuple(colors), source, prepended)


def read_class_file(path: Union[str, Path], error: Type[Exception] = ConfigError) -> ClassList:
    """A labelmap.txt or a plain list of names (one a line, ``#`` comments)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(error, str(path), None, f"cannot read class list ({exc})") from exc
    entries = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"line {lineno}"

        def fail(msg, where=where):
            raise _error(error, str(path), where, msg)

        color = None
        if ":" in line:  # labelmap: name:r,g,b:parts:actions
            name, rest = line.split(":", 1)
            color = _parse_color(rest.split(":", 1)[0], fail)
        else:
            name = line
        entries.append((name.strip(), color, where))
    return build_class_list(entries, str(path), error)


def parse_classes(spec: Union[None, str, Path, Sequence[str]],
                  error: Type[Exception] = ConfigError) -> Optional[ClassList]:
    """An explicit class list: None, a file path, a comma list, or a list of names."""
    if spec is None:
        return None
    if isinstance(spec, ClassList):
        return spec
    if isinstance(spec, Path) or (isinstance(spec, str) and Path(spec).expanduser().is_file()):
        return read_class_file(Path(spec).expanduser(), error)
    if isinstance(spec, str):
        if not spec.strip():
            raise error("--classes: an empty class list")
        if "," not in spec and ("/" in spec or spec.endswith(".txt")):
            raise error(f"--classes {spec}: no such class file")
        items = spec.split(",")
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
        if not all(isinstance(x, str) for x in items):
            raise error(f"classes must be names (strings), got {spec!r}")
    else:
        raise error(f"classes must be a list of names, a comma list or a file, got {spec!r}")
    entries = [(str(n).strip(), None, f"name {k + 1}") for k, n in enumerate(items)]
    return build_class_list(entries, "--classes", error)


def labelmap_disagreement(voc_dir: Union[str, Path], explicit: ClassList) -> Optional[str]:
    """What is wrong when an explicit class list is not the folder's labelmap.txt: the
    masks' values (and colours) are that file's indices, so a list in another order
    or with other names reads them as other classes; None when they agree (or there
    is no readable labelmap)."""
    labelmap = Path(voc_dir) / LABELMAP
    if not labelmap.is_file():
        return None
    try:
        own = read_class_file(labelmap, DatasetError)
    except DatasetError:
        return None
    if tuple(own.names) == tuple(explicit.names):
        return None
    return (f"{explicit.source} gives the classes {', '.join(explicit.names)}, but {labelmap} "
            f"lists {', '.join(own.names)}: mask values are read in the order of {explicit.source} "
            "(value i = its i-th name); leave --classes out to use the labelmap")


def resolve_classes(voc_dir: Union[str, Path], classes=None, warn: bool = True) -> ClassList:
    """The class list of the VOC2012 folder `voc_dir` (module doc: explicit, labelmap, VOC).
    An explicit list that is not the folder's labelmap.txt is taken, with a warning
    (`warn`; labelmap_disagreement)."""
    explicit = parse_classes(classes)
    if explicit is not None:
        if warn:
            note = labelmap_disagreement(voc_dir, explicit)
            if note:
                import warnings

                warnings.warn(note)  # (one place: said once a run)
        return explicit
    labelmap = Path(voc_dir) / LABELMAP
    if labelmap.is_file():
        return read_class_file(labelmap, DatasetError)
    return VOC
