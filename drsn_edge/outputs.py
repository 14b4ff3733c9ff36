"""Outputs that cannot destroy user data, checked before any work starts: an output that is, or holds, or
sits inside one of the command's inputs is refused; a folder is only replaced when it is a previous build
(or with --force); the place it goes must be writable, on a writable filesystem, with a name it allows.
Every command that writes calls `guard_file` or `guard_folder` once, with everything it reads."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import InputError

TMP_NAME_EXTRA = 32  # atomic writes go through ".<name>.<pid>.<random><suffix>" beside the output


def _resolved(p) -> Path:
    return Path(os.path.abspath(os.path.realpath(p)))


NAME_MAX = 255  # bytes per name on every Linux filesystem drsn-edge writes to; check_writable asks the filesystem


def check_names(path, flag: str) -> None:
    """Refuse a path with a name longer than any filesystem allows, before anything looks it up (a lookup
    fails with 'File name too long')."""
    for name in Path(os.path.abspath(path)).parts:
        if len(os.fsencode(name)) > NAME_MAX:
            raise InputError(f"{flag} '{str(path)[:60]}…': the name '{name[:40]}…' is {len(os.fsencode(name))} "
                             f"bytes, more than the {NAME_MAX} a filesystem allows — use a shorter name")


def _overlaps(out: Path, inp: Path) -> str | None:
    """How `out` would destroy `inp`: the same file, a folder holding it, or a file inside an input folder."""
    if out == inp or (out.exists() and inp.exists() and os.path.samefile(out, inp)):
        return "is"
    if out in inp.parents:
        return "holds"
    if inp.is_dir() and inp in out.parents:
        return "is inside"
    return None


def check_overlap(outputs, inputs, flag: str = "-o") -> None:
    """Refuse outputs (a file and its companions, such as a manifest) that are or contain an input."""
    ins = [(i, _resolved(i)) for i in inputs if i is not None]
    for out in outputs:
        check_names(out, flag)
        o = _resolved(out)
        for raw, inp in ins:
            how = _overlaps(o, inp)
            if how == "is":
                raise InputError(f"{flag} '{out}' is the input '{raw}'; writing it would destroy that input — "
                                 "choose another output name")
            if how == "holds":
                raise InputError(f"{flag} '{out}' holds the input '{raw}'; writing there would destroy it — "
                                 "choose another output")
            if how == "is inside":
                raise InputError(f"{flag} '{out}' is inside the input folder '{raw}'; write it somewhere else")


def check_writable(path, flag: str = "-o", extra_name: int = TMP_NAME_EXTRA, folder: bool = False) -> None:
    """Refuse, before the work, an output that cannot be written: a parent that is a file, a folder that is
    not writable or on a read-only filesystem, a name longer than the filesystem allows."""
    p = Path(os.path.abspath(path))
    anc = p.parent
    new = [p.name]
    while not anc.exists():
        new.insert(0, anc.name)
        anc = anc.parent
    if not anc.is_dir():
        raise InputError(f"{flag} '{path}': '{anc}' is a file, not a folder; choose another output path")
    try:
        name_max = os.pathconf(anc, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for i, name in enumerate(new):
        extra = extra_name if i == len(new) - 1 else 0
        if len(os.fsencode(name)) + extra > name_max:
            raise InputError(f"{flag} '{path}': the name '{name[:40]}…' is {len(os.fsencode(name))} bytes; this "
                             f"filesystem allows {name_max - extra} here — use a shorter name")
    try:
        ro = bool(os.statvfs(anc).f_flag & os.ST_RDONLY)
    except OSError:
        ro = False
    if ro:
        raise InputError(f"{flag} '{path}': '{anc}' is on a read-only filesystem; choose an output on a writable one")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise InputError(f"{flag} '{path}': no permission to write in '{anc}'; choose another output folder")
    _try_create(anc, path, flag)
    if p.is_dir() and not folder:
        raise InputError(f"{flag} '{path}' is a folder; name a file")


def _try_create(folder: Path, path, flag: str) -> None:
    """Create and remove a file where the output goes: what permissions and flags cannot tell (root on a
    virtual filesystem, a read-only bind mount) shows here, before the work."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".drsn-edge-probe.{os.getpid()}.", dir=folder)
    except OSError as exc:
        raise InputError(f"{flag} '{path}': cannot write in '{folder}' ({exc.strerror or exc}); "
                         "choose another output folder") from None
    os.close(fd)
    os.unlink(tmp)


def guard_file(out, inputs=(), companions=(), flag: str = "-o") -> Path:
    """An output file (with companion files such as its manifest or sidecar) that is safe to write."""
    outs = [Path(out), *[Path(c) for c in companions]]
    check_overlap(outs, inputs, flag)
    check_writable(out, flag)
    return Path(out)


def guard_folder(out_dir, inputs=(), force: bool = False, flag: str = "-o", is_ours=None) -> Path:
    """An output folder that may be replaced: not the current folder or one above it, not one holding an
    input, and either new, empty, one of ours (`is_ours(path)`, e.g. a build folder with its marker) or --force."""
    out = _resolved(out_dir)
    cwd = _resolved(Path.cwd())
    if out == cwd or out in cwd.parents:
        raise InputError(f"{flag} '{out_dir}' is the current folder or one above it; name a new folder")
    return guard_into_folder(out_dir, inputs, force, flag, is_ours, "replace it")


def guard_into_folder(folder, inputs=(), force: bool = False, flag: str = "--report", is_ours=None,
                      verb: str = "write into it") -> Path:
    """A folder the command writes its files into (a report, a work folder of builds): it is not, does not
    hold and does not sit inside an input; it is new, empty, holds only what drsn-edge writes there
    (`is_ours(path)`) or --force is given; it can be written."""
    check_overlap([folder], inputs, flag)
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise InputError(f"{flag} '{folder}' is a file; name a folder")
    if out.is_dir() and any(out.iterdir()) and not force and not (is_ours and is_ours(out)):
        raise InputError(f"{flag} '{folder}' is not empty and was not written by drsn-edge; choose a new folder, "
                         f"or pass --force to {verb}")
    check_writable(folder, flag, folder=True)
    return out


def holds_only(names, allow_dirs=None):
    """`is_ours` for a folder that drsn-edge fills with the given file names (and hidden temporaries of its
    runs); `allow_dirs(path)` accepts subfolders (e.g. build folders)."""
    names = set(names)

    def ours(folder: Path) -> bool:
        for p in folder.iterdir():
            if p.name.startswith(".") or (p.is_file() and not p.is_symlink() and p.name in names):
                continue
            if p.is_dir() and not p.is_symlink() and allow_dirs is not None and allow_dirs(p):
                continue
            return False
        return True

    return ours


def guard_report(folder, names, inputs=(), force: bool = False, flag: str = "--report") -> Path:
    """A report folder: new, empty, a previous report (only these file names) or --force."""
    return guard_into_folder(folder, inputs, force, flag, holds_only(names))


def guard_append(path, inputs=(), flag: str = "--out", is_ours=None) -> Path:
    """A file the command appends to: not an input, writable, and when it exists and is not empty, one that
    drsn-edge wrote (`is_ours(path)`) — lines are never added to a file of the user's."""
    check_overlap([path], inputs, flag)
    p = Path(path)
    if p.exists() and not p.is_file():
        raise InputError(f"{flag} '{path}' is not a regular file; name a file")
    check_writable(path, flag)
    if p.is_file() and p.stat().st_size and is_ours is not None and not is_ours(p):
        raise InputError(f"{flag} '{path}' exists and was not written by drsn-edge; choose another file")
    if p.is_file() and not os.access(p, os.W_OK):
        raise InputError(f"{flag} '{path}': no permission to write it; choose another file")
    return p
