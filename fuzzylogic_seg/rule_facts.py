"""The fact vocabulary that rule files for SAM fine-tuning bind to.

A rule file declares predicates; the fine-tuner feeds every declared
predicate the tensor of the same name below, built from the weak labels of
each image and from SAM's output. So a user adds a prior by writing a rule
over these names, with no code. Tensors live on SAM's low-resolution mask
grid (``G x G``, 4x the image-embedding size: 64 for the embedded SAM, 256
for SAM ViT-B/L/H), which covers the image view resized so its longer side
fills the grid; the rest is padding, excluded from every quantifier through
the ``row`` / ``col`` domains. Prompts of one image are the ``region`` sort
(padded across a batch, with a ``region`` domain).

Sorts (one tensor axis each; the names are the file's choice, the roles are
fixed by the argument positions below): ``region`` (one per prompt),
``row``, ``col``.

==================  =====================  =======  ===============================================
name                arguments              input    meaning
==================  =====================  =======  ===============================================
mask                region, row, col       logits   SAM's mask for the region's prompt
mask_right          region, row, col       logits   ``mask`` at (row, col + 1)
mask_down           region, row, col       logits   ``mask`` at (row + 1, col)
mask_inward         region, row, col       logits   ``mask`` one step towards the region's centre
inbox               region, row, col       prob     share of the cell inside the region's box
rowin               region, row            prob     share of the row inside the box's rows
colin               region, col            prob     share of the column inside the box's columns
outside             row, col               prob     the cell is covered by no box
overlap             region, region         prob     two different regions whose boxes intersect
ellipse             region, row, col       prob     the ellipse inscribed in the region's box
zs                  region, row, col       prob     the frozen (zero-shot) model's probability
zs_fg               region, row, col       prob     1 where zero-shot is sure of the region
zs_bg               region, row, col       prob     1 where zero-shot is sure of not-the-region
scrib               region, row, col       prob     a scribble of the region's class in the cell
scrib_other         region, row, col       prob     a scribble of another class in the cell
point               region, row, col       prob     a point of the region's class in the cell
point_other         region, row, col       prob     a point of another class in the cell
bglike              region, row, col       prob     in the box, a colour seen in a band just outside it
similar_right       row, col               prob     colour affinity of (row, col) and (row, col+1)
similar_down        row, col               prob     colour affinity of (row, col) and (row+1, col)
==================  =====================  =======  ===============================================

``mask_right`` / ``mask_down`` predate the language's offsets: ``mask(a, r, c + 1)``
says the same in a rule file (and shares ``mask``'s sigmoid and logs).
Box-derived facts need box prompts; scribble facts scribbles; point facts points. The
centre used by ``mask_inward`` is the box centre (point prompts: the mean of
the positive points). ``similar_*`` is ``exp(-d^2 / (2 (k sigma)^2))`` with
``d`` the RMS colour difference of the two cells (image resized to the grid)
and ``sigma`` the image's own noise level, a robust (median absolute
deviation) estimate over all neighbour differences, so the threshold follows
the image, not a constant tuned on a data set.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .errors import ConfigError

# name -> (argument roles, input kind)
VOCABULARY: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "mask": (("region", "row", "col"), "logits"),
    "mask_right": (("region", "row", "col"), "logits"),
    "mask_down": (("region", "row", "col"), "logits"),
    "mask_inward": (("region", "row", "col"), "logits"),
    "inbox": (("region", "row", "col"), "prob"),
    "rowin": (("region", "row"), "prob"),
    "colin": (("region", "col"), "prob"),
    "outside": (("row", "col"), "prob"),
    "overlap": (("region", "region"), "prob"),
    "ellipse": (("region", "row", "col"), "prob"),
    "zs": (("region", "row", "col"), "prob"),
    "zs_fg": (("region", "row", "col"), "prob"),
    "zs_bg": (("region", "row", "col"), "prob"),
    "scrib": (("region", "row", "col"), "prob"),
    "scrib_other": (("region", "row", "col"), "prob"),
    "point": (("region", "row", "col"), "prob"),
    "point_other": (("region", "row", "col"), "prob"),
    "bglike": (("region", "row", "col"), "prob"),
    "similar_right": (("row", "col"), "prob"),
    "similar_down": (("row", "col"), "prob"),
    "bright": (("row", "col"), "prob"),
}
# Tags: SAM's automatic proposals, classed by a small head (fuzzylogic_seg/tags.py).
TAG_VOCABULARY: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "cls": (("proposal", "class"), "softmax"),     # the head's class of each proposal
    "tagged": (("class",), "prob"),                # the class is tagged (present)
    "absent": (("class",), "prob"),                # a foreground class that is not tagged
    "border": (("proposal",), "prob"),             # share of the image frame the proposal covers
    "large": (("proposal",), "prob"),              # share of the image the proposal covers
}
# What each fact says (``fuzzyseg rules facts`` prints these; a test keeps them complete).
MEANINGS: Dict[str, str] = {
    "mask": "SAM's mask for the region's prompt",
    "mask_right": "`mask` at (row, col + 1); `mask(a, r, c + 1)` says the same",
    "mask_down": "`mask` at (row + 1, col); `mask(a, r + 1, c)` says the same",
    "mask_inward": "`mask` one step towards the region's centre",
    "inbox": "share of the cell inside the region's box",
    "rowin": "share of the row inside the box's rows",
    "colin": "share of the column inside the box's columns",
    "outside": "the cell is covered by no box",
    "overlap": "two different regions whose boxes intersect",
    "ellipse": "the ellipse inscribed in the region's box",
    "zs": "the frozen (zero-shot) model's probability",
    "zs_fg": "1 where zero-shot is sure of the region",
    "zs_bg": "1 where zero-shot is sure of not-the-region",
    "scrib": "a scribble of the region's class in the cell",
    "scrib_other": "a scribble of another class in the cell",
    "point": "a point of the region's class in the cell",
    "point_other": "a point of another class in the cell",
    "bglike": "in the box, a colour seen in a band just outside it",
    "similar_right": "colour affinity of (row, col) and (row, col + 1)",
    "similar_down": "colour affinity of (row, col) and (row + 1, col)",
    "bright": "the cell's brightness, 0 to 1 between the view's 2nd and 98th percentiles",
    "cls": "the class head's class of each proposal",
    "tagged": "the class is tagged (it occurs)",
    "absent": "a foreground class without a tag (it does not occur)",
    "border": "share of the image frame the proposal covers",
    "large": "share of the image the proposal covers",
}
MODEL_FACTS = ("mask", "mask_right", "mask_down", "mask_inward")
BOX_FACTS = ("inbox", "rowin", "colin", "outside", "overlap", "ellipse")
ZS_FACTS = ("zs", "zs_fg", "zs_bg")
SCRIBBLE_FACTS = ("scrib", "scrib_other")
POINT_FACTS = ("point", "point_other")
IMAGE_FACTS = ("similar_right", "similar_down", "bright")
BOX_IMAGE_FACTS = ("bglike",)


def available_facts(weak: str) -> Tuple[str, ...]:
    """The vocabulary that SAM fine-tuning on weak labels of kind ``weak`` can feed:
    SAM's masks, the zero-shot and image facts, and those of the kind's own
    (tags have a vocabulary of their own: TAG_VOCABULARY)."""
    names = set(MODEL_FACTS) | set(ZS_FACTS) | set(IMAGE_FACTS)
    if weak == "boxes":
        names |= set(BOX_FACTS) | set(BOX_IMAGE_FACTS)
    if weak == "scribbles":
        names |= set(SCRIBBLE_FACTS)
    if weak == "points":
        names |= set(POINT_FACTS)
    return tuple(sorted(names))


# ------------------------------------------------------------ binding a file
# Data sets whose regions are fixed slots that a rule file may name by index.
FIXED_REGION_DATASETS = ("refuge",)
# Their slots, in index order (finetune.REFUGE_SLOTS counts REFUGE's).
FIXED_REGION_SLOTS = {"refuge": ("disc", "cup")}


@dataclass(frozen=True)
class Binding:
    """How one rule file binds to the vocabulary: the predicates it declares
    (with their input kinds) and which of its sort names play which role."""

    predicates: Tuple[str, ...]
    sorts: Dict[str, str]  # role -> the file's sort name

    def needs(self, group: Iterable[str]) -> bool:
        return any(p in self.predicates for p in group)


def located(program, pos, message: str, hint: Optional[str] = None) -> str:
    """``message`` at ``pos`` of a checked program, rendered as the language's own
    errors are: the file that holds it (an included one, where it is), line, column,
    the line with a caret, and the hint."""
    from fuzzylogic.errors import SourceError

    if pos is None or not getattr(pos, "line", 0):
        out = f"{getattr(program, 'source', '<rules>')}: {message}"
        return out + (f"\n  hint: {hint}" if hint else "")
    text = program.text_of(pos.source) if hasattr(program, "text_of") else None
    return str(SourceError(message, pos.source, pos.line, pos.column, text, hint))


def _place(pos) -> str:
    return f"{pos.source}:{pos.line}:{pos.column}" if getattr(pos, "line", 0) else "another predicate"


def bind(program, available: Optional[Iterable[str]] = None,
         vocabulary: Optional[Dict[str, Tuple[Tuple[str, ...], str]]] = None,
         dataset: Optional[str] = None) -> Binding:
    """Check a checked ``fuzzylogic.ast.Program`` against the vocabulary.

    Raises :class:`ConfigError` naming the rule file and predicate when a
    predicate is unknown, not ``available`` for this data (e.g. ``scrib``
    without scribbles), has the wrong arity or input kind, or when one sort
    name is used in two roles. With ``dataset``, also when a constant fixes a region
    on a data set whose regions are not fixed slots (only REFUGE's are: disc 0,
    cup 1; VOC's are its boxes in file order).
    """
    vocab = VOCABULARY if vocabulary is None else vocabulary
    avail = set(vocab if available is None else available)
    # the file's own sort for each role, from its well-formed declarations (for hints)
    file_sorts: Dict[str, str] = {}
    for decl in program.predicates:
        if decl.name in vocab and len(decl.args) == len(vocab[decl.name][0]):
            for role, sort in zip(vocab[decl.name][0], decl.args):
                file_sorts.setdefault(role, sort)
    roles: Dict[str, str] = {}
    role_pos: Dict[str, object] = {}
    names = []
    for decl in program.predicates:
        def fail(message, pos=decl.pos, hint=None):
            raise ConfigError(located(program, pos, message, hint))

        if decl.name not in vocab:
            fail(f"predicate {decl.name!r} is not a fact the fine-tuner provides",
                 hint=f"known: {', '.join(sorted(vocab))}")
        if decl.name not in avail:
            fail(f"predicate {decl.name!r} cannot be built from these weak labels",
                 hint=f"available here: {', '.join(sorted(avail))}")
        want_roles, want_input = vocab[decl.name]
        if len(decl.args) != len(want_roles):
            kind = {"logits": " logits", "softmax": " softmax(class)"}.get(want_input, "")
            args = ", ".join(file_sorts.get(role, role) for role in want_roles)
            fail(f"predicate {decl.name!r} takes {len(want_roles)} arguments "
                 f"({', '.join(want_roles)}), the file declares {len(decl.args)}",
                 hint=f"declare it `predicate {decl.name}({args}){kind}`")
        if decl.input != want_input or (
                want_input == "softmax" and (decl.softmax_arg is None
                                             or want_roles[decl.softmax_arg] != "class")):
            kind = {"logits": " logits", "softmax": f" softmax({decl.args[-1]})"}.get(want_input, "")
            fail(f"predicate {decl.name!r} is fed {want_input}",
                 hint=f"declare it `predicate {decl.name}({', '.join(decl.args)}){kind}`")
        arg_pos = tuple(getattr(decl, "arg_pos", ()) or ())
        for k, (role, sort) in enumerate(zip(want_roles, decl.args)):
            at = arg_pos[k] if k < len(arg_pos) else decl.pos  # (the argument, where known)
            prev = roles.get(role)
            if prev is not None and prev != sort:
                fail(f"sort {sort!r} plays the {role} role, but {prev!r} already does", pos=at,
                     hint=f"{prev!r} took that role at " + _place(role_pos[role]))
            role_pos.setdefault(role, at)
            roles[role] = sort
        names.append(decl.name)
    by_sort: Dict[str, str] = {}
    for role, sort in roles.items():
        if by_sort.get(sort, role) != role:
            raise ConfigError(located(
                program, role_pos[role], f"sort {sort!r} is used both as {by_sort[sort]} and as {role}"))
        by_sort[sort] = role
    slots = FIXED_REGION_SLOTS.get(dataset or "")
    if slots is not None and "region" in roles:
        for c in program.constants:
            if c.sort == roles["region"] and c.index is not None and c.index >= len(slots):
                named = ", ".join(f"{s} {i}" for i, s in enumerate(slots))
                raise ConfigError(located(
                    program, c.pos, f"constant {c.name!r} fixes region {c.index}, but {dataset} "
                    f"has {len(slots)} region slots ({named})",
                    hint="a region is one box prompt; other parts are formulas over them, "
                         "e.g. the rim: mask(disc, r, c) and not mask(cup, r, c)"
                    if dataset == "refuge" else None))
    if dataset is not None and dataset not in FIXED_REGION_DATASETS and "region" in roles:
        for c in program.constants:
            if c.sort == roles["region"] and c.index is not None:
                raise ConfigError(located(
                    program, c.pos, f"constant {c.name!r} fixes region {c.index}, but the regions "
                    f"of {dataset} are its boxes in the order of each image's labels",
                    hint="a fixed region is a REFUGE slot (disc 0, cup 1): this rule file is "
                         "written for REFUGE; for this data set, state rules over every region"))
    return Binding(tuple(names), roles)


def bind_for(program, path: str, use: str, dataset: Optional[str] = None) -> None:
    """ConfigError (naming the file and line) unless the checked ``program`` read
    from ``path`` binds to the facts that ``use`` feeds, as a run will bind it."""
    from .rulefiles import RULE_USES

    if use not in RULE_USES:
        raise ConfigError(f"unknown rule-file use {use!r}; choose one of {', '.join(RULE_USES)}")
    if use.startswith("student-"):
        from .student import StudentLogic

        StudentLogic(path, use.split("-", 1)[1])
    elif use == "tags":
        bind(program, vocabulary=TAG_VOCABULARY)
    else:
        bind(program, available_facts(use), dataset=dataset)


def explain_unknown_fact(exc: Exception, use: Optional[str] = None) -> Exception:
    """An undeclared predicate that is one of the facts fuzzyseg builds: the same error
    with its declaration as the hint (the checker alone can only say "declare it")."""
    from fuzzylogic.errors import CheckError

    if not (isinstance(exc, CheckError) and exc.message.startswith("unknown predicate '")
            and (exc.hint or "").startswith("declare it")) or (use or "").startswith("student"):
        return exc
    name = exc.message.split("'")[1]
    vocab = TAG_VOCABULARY if use == "tags" else VOCABULARY
    if name not in vocab:
        return exc
    roles, kind = vocab[name]
    decl = f"predicate {name}({', '.join(roles)})" + {"logits": " logits",
                                                      "softmax": f" softmax({roles[-1]})"}.get(kind, "")
    fed = "" if not use or use == "tags" or name in available_facts(use) else \
        f" (note: weak labels of kind {use} do not feed it)"
    hint = f"declare it: {decl}   # {MEANINGS.get(name, 'a fact fuzzyseg builds')}{fed}"
    return CheckError(exc.message, exc.source, exc.line, exc.column, exc.text, hint)


def check_file_for(path, use: str, dataset: Optional[str] = None) -> None:
    """Parse, check and bind one rule file for ``use`` (errors name the file and line)."""
    from fuzzylogic.checker import check
    from fuzzylogic.errors import CheckError
    from fuzzylogic.parser import parse_file

    from .rulefiles import resolve_rule_file

    p = resolve_rule_file(path)
    try:
        program = check(parse_file(p))
    except CheckError as exc:
        better = explain_unknown_fact(exc, use)
        if better is exc:
            raise
        raise better from None
    bind_for(program, str(p), use, dataset)


# ------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class Grid:
    """SAM's low-resolution mask grid for one view: ``size`` x ``size`` cells,
    the view occupying the top-left ``rows`` x ``cols``; ``scale`` maps view
    pixels to cells."""

    size: int
    rows: int
    cols: int
    scale: float


def grid_for(view_size: Sequence[int], size: int) -> Grid:
    vh, vw = int(view_size[0]), int(view_size[1])
    s = size / max(vh, vw)
    return Grid(size, max(1, min(size, int(round(vh * s)))), max(1, min(size, int(round(vw * s)))), s)


def _cover(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """[P, n]: the share of each unit cell [i, i+1) inside [lo, hi)."""
    i = torch.arange(n, dtype=torch.float32, device=lo.device)
    return (torch.minimum(hi[:, None], i + 1) - torch.maximum(lo[:, None], i)).clamp(0, 1)


def box_facts(boxes: torch.Tensor, grid: Grid) -> Dict[str, torch.Tensor]:
    """``inbox, rowin, colin, outside, overlap, ellipse`` for boxes [P, 4] in view pixels."""
    g, n = grid.scale, grid.size
    b = boxes.float() * g
    rows, cols = _cover(b[:, 1], b[:, 3], n), _cover(b[:, 0], b[:, 2], n)
    inbox = rows[:, :, None] * cols[:, None, :]
    outside = torch.prod(1 - inbox, 0) if len(b) else torch.ones(n, n)
    ix0 = torch.maximum(b[:, None, 0], b[None, :, 0])
    ix1 = torch.minimum(b[:, None, 2], b[None, :, 2])
    iy0 = torch.maximum(b[:, None, 1], b[None, :, 1])
    iy1 = torch.minimum(b[:, None, 3], b[None, :, 3])
    overlap = ((ix1 > ix0) & (iy1 > iy0)).float()
    overlap.fill_diagonal_(0)
    return {"inbox": inbox, "rowin": rows, "colin": cols, "outside": outside,
            "overlap": overlap, "ellipse": ellipse_masks(b, n)}


def ellipse_masks(b: torch.Tensor, n: int) -> torch.Tensor:
    """[P, n, n]: the ellipse inscribed in each box (grid units), soft over about one cell."""
    c = torch.arange(n, dtype=torch.float32, device=b.device) + 0.5
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    rx = ((b[:, 2] - b[:, 0]) / 2).clamp_min(0.5)
    ry = ((b[:, 3] - b[:, 1]) / 2).clamp_min(0.5)
    u = (c[None, None, :] - cx[:, None, None]) / rx[:, None, None]
    v = (c[None, :, None] - cy[:, None, None]) / ry[:, None, None]
    rho = torch.sqrt(u * u + v * v)
    dist = (1 - rho) * torch.minimum(rx, ry)[:, None, None]  # ~ signed distance in cells
    return (0.5 + dist).clamp(0, 1)


def inward_index(centres: torch.Tensor, n: int) -> torch.Tensor:
    """[P, n*n] flat index of each cell's 8-neighbour one step towards the centre."""
    c = torch.arange(n, dtype=torch.float32, device=centres.device) + 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    dx = centres[:, 0, None, None] - xx
    dy = centres[:, 1, None, None] - yy
    norm = torch.sqrt(dx * dx + dy * dy)
    near = norm < 0.75  # the centre cell points at itself
    sx = torch.where(near, torch.zeros_like(dx), torch.round(dx / norm.clamp_min(1e-6)))
    sy = torch.where(near, torch.zeros_like(dy), torch.round(dy / norm.clamp_min(1e-6)))
    jj = (xx - 0.5 + sx).clamp(0, n - 1).long()
    ii = (yy - 0.5 + sy).clamp(0, n - 1).long()
    return (ii * n + jj).reshape(len(centres), -1)


def prompt_centres(prompts) -> torch.Tensor:
    """[P, 2] centre of each prompt in view pixels (box centre; mean positive point)."""
    if prompts.boxes is not None:
        b = prompts.boxes.float()
        return torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)
    pos = (prompts.point_labels == 1).float()[..., None]
    return (prompts.points.float() * pos).sum(1) / pos.sum(1).clamp_min(1)


def to_grid(maps: torch.Tensor, grid: Grid, mode: str = "area") -> torch.Tensor:
    """[K, vh, vw] view-sized maps -> [K, n, n] on the grid (zeros in the padding).

    ``mode="max"`` keeps a cell on when any of its pixels is on (thin scribbles)."""
    x = maps.float()[None]
    if mode == "max":
        y = F.adaptive_max_pool2d(x, (grid.rows, grid.cols))
    else:
        y = F.interpolate(x, size=(grid.rows, grid.cols), mode="area" if
                          x.shape[-1] >= grid.cols else "bilinear", **(
                              {} if x.shape[-1] >= grid.cols else {"align_corners": False}))
    out = torch.zeros(maps.shape[0], grid.size, grid.size, device=maps.device)
    out[:, :grid.rows, :grid.cols] = y[0]
    return out


def scribble_facts(scribble: torch.Tensor, labels: torch.Tensor, grid: Grid,
                   ignore_index: int = 255) -> Dict[str, torch.Tensor]:
    """``scrib`` / ``scrib_other`` [P, n, n] from a view-sized scribble map."""
    marked = scribble != ignore_index
    own = torch.stack([(scribble == int(c)) & marked for c in labels.tolist()]) \
        if len(labels) else torch.zeros(0, *scribble.shape, dtype=torch.bool)
    other = marked[None] & ~own
    return {"scrib": to_grid(own, grid, "max"), "scrib_other": to_grid(other, grid, "max")}


def point_facts(points: torch.Tensor, point_labels: torch.Tensor, labels: torch.Tensor,
                view_size: Sequence[int], grid: Grid) -> Dict[str, torch.Tensor]:
    """``point`` / ``point_other`` [P, n, n] from points (x, y) in view pixels."""
    h, w = int(view_size[0]), int(view_size[1])
    marks = torch.full((h, w), 255, dtype=torch.long)
    xy = points.floor().long()
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    marks[xy[inside, 1], xy[inside, 0]] = point_labels[inside].long()
    f = scribble_facts(marks, labels, grid)
    return {"point": f["scrib"], "point_other": f["scrib_other"]}


def similarity_facts(image: torch.Tensor, grid: Grid, k: float = 3.0) -> Dict[str, torch.Tensor]:
    """``similar_right`` / ``similar_down`` [n, n] from a view image uint8 [3, vh, vw]."""
    img = to_grid(image.float() / 255.0, grid)  # [3, n, n]
    r, c = grid.rows, grid.cols
    dr = img[:, :, 1:] - img[:, :, :-1]
    dd = img[:, 1:, :] - img[:, :-1, :]
    inside = torch.cat([dr[:, :r, :c - 1].reshape(-1), dd[:, :r - 1, :c].reshape(-1)])
    sigma = (1.4826 * inside.abs().median()).clamp_min(1.0 / 255) if inside.numel() else torch.tensor(1.0)
    den = 2 * (k * sigma) ** 2
    right = torch.zeros(grid.size, grid.size)
    down = torch.zeros(grid.size, grid.size)
    right[:r, :c - 1] = torch.exp(-(dr[:, :r, :c - 1] ** 2).mean(0) / den)
    down[:r - 1, :c] = torch.exp(-(dd[:, :r - 1, :c] ** 2).mean(0) / den)
    return {"similar_right": right, "similar_down": down}


def brightness_facts(image: torch.Tensor, grid: Grid, lo: float = 0.02, hi: float = 0.98
                     ) -> Dict[str, torch.Tensor]:
    """``bright`` [n, n] from a view image uint8 [3, vh, vw]: each cell's luminance
    (ITU-R 601 weights) scaled to 0..1 between the view's `lo` and `hi` quantiles, so
    that the same prior ("the cup is the brightest part of the disc") reads alike on
    dark and bright photographs; 0 outside the view."""
    img = to_grid(image.float() / 255.0, grid)  # [3, n, n]
    r, c = grid.rows, grid.cols
    lum = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[:r, :c]
    q = torch.quantile(lum.reshape(-1), torch.tensor([lo, hi]))
    out = torch.zeros(grid.size, grid.size)
    out[:r, :c] = ((lum - q[0]) / (q[1] - q[0]).clamp_min(1e-6)).clamp(0, 1)
    return {"bright": out}


def noise_level(img: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Robust noise level of an image on the grid: 1.4826 MAD of neighbour differences."""
    r, c = grid.rows, grid.cols
    dr = img[:, :r, 1:c] - img[:, :r, :c - 1]
    dd = img[:, 1:r, :c] - img[:, :r - 1, :c]
    inside = torch.cat([dr.reshape(-1), dd.reshape(-1)])
    if not inside.numel():
        return torch.tensor(1.0)
    return (1.4826 * inside.abs().median()).clamp_min(1.0 / 255)


def bglike_facts(image: torch.Tensor, boxes: torch.Tensor, grid: Grid, band: float = 0.15,
                 k: float = 3.0) -> torch.Tensor:
    """``bglike`` [P, n, n]: inside each box, how close a cell's colour comes to the
    colours of a band just outside the box (GrabCut's background model, as a fact).

    The band is ``band`` times the box's size wide (at least 2 cells), within the
    image; the closeness is exp(-d^2 / (2 (k sigma)^2)) with d the RMS colour
    distance to the nearest band cell and sigma the image's noise level. 0 outside
    the box and where no band exists (a box filling the image)."""
    img = to_grid(image.float() / 255.0, grid)  # [3, n, n]
    n = grid.size
    sigma = noise_level(img, grid)
    den = 2 * (k * sigma) ** 2
    flat = img.reshape(3, -1).T  # [n*n, 3]
    out = torch.zeros(len(boxes), n, n)
    b = boxes.float() * grid.scale
    ii = torch.arange(n, dtype=torch.float32) + 0.5
    valid = (ii[:, None] < grid.rows) & (ii[None, :] < grid.cols)
    for p, (x0, y0, x1, y1) in enumerate(b.tolist()):
        w = max(2.0, band * (x1 - x0))
        h = max(2.0, band * (y1 - y0))
        inx = (ii >= x0) & (ii < x1)
        iny = (ii >= y0) & (ii < y1)
        inside = iny[:, None] & inx[None, :]
        grown = ((ii >= y0 - h) & (ii < y1 + h))[:, None] & ((ii >= x0 - w) & (ii < x1 + w))[None, :]
        ring = grown & ~inside & valid
        if not bool(ring.any()) or not bool(inside.any()):
            continue
        cols = flat[ring.reshape(-1)]                      # [R, 3]
        cells = flat[inside.reshape(-1)]                   # [I, 3]
        d2 = torch.cdist(cells, cols).pow(2).min(1).values / 3
        out[p][inside] = torch.exp(-d2 / den)
    return out


def zero_shot_facts(zs_prob: torch.Tensor, keep_threshold: float) -> Dict[str, torch.Tensor]:
    zs = zs_prob.float()
    return {"zs": zs, "zs_fg": (zs > keep_threshold).float(), "zs_bg": (zs < 1 - keep_threshold).float()}


def model_facts(logits: torch.Tensor, need: Iterable[str], inward: Optional[torch.Tensor] = None
                ) -> Dict[str, torch.Tensor]:
    """The facts that depend on SAM's output: logits [..., P, n, n] (differentiable)."""
    need = set(need)
    out = {"mask": logits}
    if "mask_right" in need:
        out["mask_right"] = torch.cat([logits[..., 1:], logits[..., -1:]], -1)
    if "mask_down" in need:
        out["mask_down"] = torch.cat([logits[..., 1:, :], logits[..., -1:, :]], -2)
    if "mask_inward" in need:
        if inward is None:
            raise ConfigError("mask_inward needs the prompts' centres")
        flat = logits.flatten(-2)
        out["mask_inward"] = flat.gather(-1, inward.expand(flat.shape)).view_as(logits)
    return {k: v for k, v in out.items() if k in need}


# ------------------------------------------------------------------- batching
def pad_regions(x: torch.Tensor, roles: Tuple[str, ...], n: int, value: float = 0.0) -> torch.Tensor:
    """Pad every region axis of a per-image fact (no batch axis) to ``n``."""
    for axis, role in enumerate(roles):
        if role == "region" and x.shape[axis] < n:
            shape = list(x.shape)
            shape[axis] = n - x.shape[axis]
            x = torch.cat([x, x.new_full(shape, value)], axis)
    return x


def stack_facts(per_image: List[Dict[str, torch.Tensor]], names: Iterable[str], n_regions: int
                ) -> Dict[str, torch.Tensor]:
    """Stack per-image facts to ``[B, ...]``, region axes padded to ``n_regions``."""
    out = {}
    for name in names:
        roles = VOCABULARY[name][0]
        out[name] = torch.stack([pad_regions(f[name], roles, n_regions) for f in per_image])
    return out


def domains(grids: List[Grid], n_prompts: List[int], n_regions: int, binding: Binding,
            device=None) -> Dict[str, torch.Tensor]:
    """``domains=`` for a batch: valid regions, rows and columns of each image."""
    n = grids[0].size
    ar = torch.arange(max(n, n_regions), device=device)
    dom = {}
    if "region" in binding.sorts:
        dom[binding.sorts["region"]] = torch.stack([ar[:n_regions] < k for k in n_prompts])
    if "row" in binding.sorts:
        dom[binding.sorts["row"]] = torch.stack([ar[:n] < g.rows for g in grids])
    if "col" in binding.sorts:
        dom[binding.sorts["col"]] = torch.stack([ar[:n] < g.cols for g in grids])
    return dom
