"""The files side: folder scans, output planning, name and link rules, atomic writes.

Where each input's result goes (``output_targets``), the one clash check over a job list
(``check_jobs``: links, hard links, letter case where the folder ignores it, outputs that
would overwrite inputs), earlier results left in an input folder, write checks before any
work, and ``_write_atomically``, through which every output file appears whole or not at all.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..errors import ImageError
from .formats import _DEFAULT_EXTENSION, _EXTENSION_FORMATS, IMAGE_EXTENSIONS, format_for


@dataclass
class FolderScan:
    """What ``scan_folder`` found: image paths, sorted by their path below the folder, and
    ``path: reason`` for what it could not look into (a folder link that loops, an
    unreadable folder), so that every name under the folder is accounted for."""

    images: list[Path]
    skipped: dict[Path, str] = field(default_factory=dict)
    errors: dict[Path, str] = field(default_factory=dict)


def scan_folder(folder: str | Path, recursive: bool = True) -> FolderScan:
    """Every path under `folder` with an image extension, following folder links.

    Includes entries that will fail to read (directories named x.png, broken links), so the
    batch can report them. Hidden temporaries from write_image end in .part and are skipped.
    A linked folder is searched like any other, unless it is one of the folders it lies
    in (a loop): then it is listed in ``skipped``. Files reached twice under different names
    (links, hard links) are all listed; ``check_jobs`` decides which name is upscaled.
    """
    folder = Path(folder)
    scan = FolderScan(images=[])
    _scan(folder, recursive, (_file_id(folder),), scan)
    scan.images.sort(key=lambda p: p.relative_to(folder).as_posix())
    return scan


def _scan(folder: Path, recursive: bool, above: tuple, scan: FolderScan) -> None:
    """Add ``folder``'s images (and its subfolders', if recursive) to ``scan``.

    above: (device, inode) of ``folder`` and of each folder it was reached through.
    """
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        scan.errors[folder] = f"cannot list this folder: {error.strerror or error}"
        return
    for entry in entries:
        path = folder / entry.name
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            scan.images.append(path)
        if not recursive or not _is_folder(entry):
            continue
        here = _file_id(path)
        if here in above:
            scan.skipped[path] = "link to a folder it is inside of (a loop); not followed"
        else:
            _scan(path, recursive, (*above, here), scan)


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether a folder entry is a folder or a link to one (a broken link is not)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def find_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """``scan_folder``'s image paths alone (for training and benchmark data folders)."""
    return scan_folder(folder, recursive).images


@dataclass
class OutputPlan:
    """Result of planning: (input, output) pairs to process, `path: reason` errors, and
    inputs left out on purpose with why (``{path: reason}``, e.g. a second name of a file)."""

    jobs: list[tuple[Path, Path]]
    errors: list[str]
    skipped: dict[Path, str] = field(default_factory=dict)


def plan_outputs(
    inputs: list[Path],
    input_root: Path | None = None,
    out_dir: Path | None = None,
    out_file: Path | None = None,
    suffix: str = "",
    ext: str | None = None,
) -> OutputPlan:
    """Decide where each input's result goes: ``output_targets`` then ``check_jobs``."""
    plan = output_targets(inputs, input_root, out_dir, out_file, suffix, ext)
    checked = check_jobs(plan.jobs)
    return OutputPlan(checked.jobs, plan.errors + checked.errors)


def output_targets(
    inputs: list[Path],
    input_root: Path | None = None,
    out_dir: Path | None = None,
    out_file: Path | None = None,
    suffix: str = "",
    ext: str | None = None,
) -> OutputPlan:
    """Each input's output path, without looking at the other inputs (see ``check_jobs``).

    inputs: image paths (e.g. from find_images(input_root)).
    input_root: the folder the inputs were found in; its subfolders are recreated in out_dir.
    out_dir: output folder (None: next to each input). out_file: one exact output path
    (only with a single input). Output name: input stem + suffix + ext, where ext (".png" or
    "png") defaults to the input's own extension, or .png when that format cannot be written.

    Raises ImageError for a bad ext, suffix or out_file. Refused, each as one `input: reason`
    error: outputs outside out_dir, and names longer than the file system allows.
    """
    if out_file is not None and len(inputs) != 1:
        raise ImageError(f"an output file name needs exactly one input, got {len(inputs)}")
    if out_file is not None:
        format_for(out_file)  # refuse an unwritable format before any work is done
    if ext is not None:
        ext = ext if ext.startswith(".") else f".{ext}"
        format_for(f"x{ext}")
    check_suffix(suffix + (ext or ""))
    plan = OutputPlan(jobs=[], errors=[])
    for source in inputs:
        try:
            target = out_file or _output_path(source, input_root, out_dir, suffix, ext)
            _check_name_length(target)
        except ImageError as error:
            plan.errors.append(f"{source}: {error}")
            continue
        plan.jobs.append((source, target))
    return plan


def check_suffix(suffix: str) -> None:
    """Refuse a file-name suffix that would lead out of the output's folder."""
    if any(sep in suffix for sep in ("/", "\\", os.sep)):
        raise ImageError("the suffix and extension must not contain path separators")


def check_jobs(
    jobs: list[tuple[Path, Path]], other_inputs: Iterable[Path] = ()
) -> OutputPlan:
    """The one clash check over a whole job list (every argument of a command together).

    One file reached under several names (links, hard links) is upscaled once, under its
    first name that is not a link; each other name is ``skipped`` with the name that is
    done (the same path listed twice is simply done once). Refused, each as one
    `input: reason` error: an output that is any input file of the list or of
    ``other_inputs`` (compared by resolved path and by device and inode), and two inputs
    with the same output (the first keeps it). Letter case is ignored in these comparisons
    only where the output's folder ignores it (``ignores_case``).
    """
    unique, skipped = _one_name_per_file(jobs)
    sources = [source for source, _ in unique] + list(other_inputs)
    input_files = {_file_id(p) for p in sources} - {None}
    input_keys = {fold: {_path_key(p, fold) for p in sources} for fold in (False, True)}
    folds: dict[Path, bool] = {}  # whether each output folder ignores letter case
    taken: dict[str, Path] = {}
    plan = OutputPlan(jobs=[], errors=[], skipped=skipped)
    for source, target in unique:
        folder = _nearest_existing(target.parent)
        if folder not in folds:
            folds[folder] = ignores_case(folder)
        key = _path_key(target, folds[folder])
        if key in input_keys[folds[folder]] or _file_id(target) in input_files:
            plan.errors.append(
                f"{source}: output {target} would overwrite an input file; "
                "use a suffix or another output folder"
            )
        elif key in taken:
            plan.errors.append(f"{source}: output {target} is also the output of {taken[key]}")
        else:
            taken[key] = source
            plan.jobs.append((source, target))
    return plan


def _one_name_per_file(
    jobs: list[tuple[Path, Path]]
) -> tuple[list[tuple[Path, Path]], dict[Path, str]]:
    """Jobs with one name per input file (see check_jobs), and the other names, with why."""
    keys = [_file_id(source) or _path_key(source, False) for source, _ in jobs]
    kept: dict = {}  # file -> index of the job done for it
    for index, (key, (source, _)) in enumerate(zip(keys, jobs, strict=True)):
        if key not in kept or (_through_link(jobs[kept[key]][0]) and not _through_link(source)):
            kept[key] = index
    unique: list[tuple[Path, Path]] = []
    skipped: dict[Path, str] = {}
    for index, (key, (source, _)) in enumerate(zip(keys, jobs, strict=True)):
        done = jobs[kept[key]][0]
        if index == kept[key]:
            unique.append(jobs[index])
        elif os.path.abspath(source) != os.path.abspath(done):
            skipped[source] = f"same file as {done}"
    return unique, skipped


def _through_link(path: Path) -> bool:
    """Whether ``path`` names its file through a link (its own or a linked folder's)."""
    try:
        return path.resolve() != Path(os.path.abspath(path))
    except (OSError, RuntimeError):  # a link loop
        return True


def earlier_results(
    found: list[Path], root: Path, out_dir: Path | None, suffixes: Iterable[str]
) -> dict[Path, str]:
    """Files found in input folder ``root`` that are results of an earlier run, with why.

    One rule, whatever the output mode: a file inside the output folder (when that folder is
    below ``root``), or a file named like the result of another file beside it
    (``a_x4.png`` next to ``a.jpg``, for each of ``suffixes``). A user's own ``b_x4.png``
    with no ``b.*`` beside it is an input like any other.
    """
    out_resolved = None if out_dir is None else out_dir.resolve()
    if out_resolved == root.resolve():
        out_resolved = None
    stems = {(p.parent, p.stem) for p in found}
    skipped: dict[Path, str] = {}
    for path in found:
        if out_resolved is not None and out_resolved in path.resolve().parents:
            skipped[path] = "earlier result: inside the output folder"
            continue
        for suffix in filter(None, suffixes):
            original = path.stem.removesuffix(suffix)
            if original != path.stem and (path.parent, original) in stems:
                skipped[path] = f"earlier result of {original}.* beside it"
                break
    return skipped


def check_writable_folder(folder: Path) -> None:
    """Raise ImageError now if files cannot be created in ``folder`` (or the folders that
    would be made for it), instead of after each image has been upscaled.

    Tries it: a temporary file in the nearest folder that exists, removed at once.
    """
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ImageError(f"cannot write to {folder}: {existing} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".srgan-write-test."):
            pass
    except OSError as error:
        raise ImageError(f"cannot write to {folder}: {error.strerror or error}") from None


def check_safe_to_write(src: Path, dst: Path, overwrite: bool) -> None:
    """The API's write guard: never the input itself, an existing ``dst`` only if asked."""
    dst_id = _file_id(dst)
    same_path = _path_key(src, False) == _path_key(dst, False)
    if same_path or (dst_id is not None and dst_id == _file_id(src)):
        raise ImageError(f"output {dst} would overwrite the input file")
    if not overwrite and (dst.exists() or dst.is_symlink()):
        raise ImageError(f"{dst} exists (pass overwrite=True to replace it)")


def _output_path(
    source: Path, input_root: Path | None, out_dir: Path | None, suffix: str, ext: str | None
) -> Path:
    if ext is None:
        own = source.suffix.lower()
        ext = own if own in _EXTENSION_FORMATS else _DEFAULT_EXTENSION
    name = f"{source.stem}{suffix}{ext}"
    if out_dir is None:
        return source.with_name(name)
    relative = Path(source.name)
    if input_root is not None:
        try:
            relative = Path(os.path.abspath(source)).relative_to(os.path.abspath(input_root))
        except ValueError:
            raise ImageError(f"not inside the input folder {input_root}") from None
    target = out_dir / relative.parent / name
    try:
        target.resolve().relative_to(out_dir.resolve())
    except ValueError:
        raise ImageError(f"output {target} would be outside the output folder") from None
    return target


def _check_name_length(target: Path) -> None:
    """Refuse an output name longer than its file system allows (usually 255 bytes)."""
    try:
        limit = os.pathconf(_nearest_existing(target.parent), "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    length = len(os.fsencode(target.name)) + len("..") + 8 + len(".part")  # write_image's temp
    if length > limit:
        raise ImageError(
            f"output name {target.name[:40]}... is too long for the file system "
            f"({len(os.fsencode(target.name))} bytes; the limit is {limit} including "
            "a temporary suffix)"
        )


def _path_key(path: Path, fold_case: bool) -> str:
    """A path compared as the file system does: absolute, links resolved, and letter case
    folded when ``fold_case`` (a folder that ignores case, see ``ignores_case``)."""
    try:
        resolved = str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        resolved = os.path.abspath(path)
    return resolved.casefold() if fold_case else resolved


def ignores_case(folder: Path) -> bool:
    """Whether file names in ``folder`` (or the nearest folder above it that exists) ignore
    letter case, as on macOS and Windows by default; most Linux file systems do not.

    Probed, since it depends on the file system (and even on the folder): a temporary file
    is made and looked up with its letter case swapped. A folder that cannot be probed
    (read-only, say) is taken to ignore case, the cautious answer for clash checks.
    """
    try:
        with tempfile.NamedTemporaryFile(prefix=".srgan-case-probe-", dir=_nearest_existing(
                folder)) as probe:
            swapped = Path(probe.name).with_name(Path(probe.name).name.swapcase())
            return swapped.exists() and os.path.samefile(probe.name, swapped)
    except OSError:
        return True


def _nearest_existing(folder: Path) -> Path:
    """``folder`` itself if it exists, else the nearest folder above it that does."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing path, so hard links and case variants compare equal."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


# ----------------------------------------------------------------------------- atomic writes


def _write_atomically(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Call save(file) on a temporary file next to `path`, then rename it to `path`.

    Missing parent folders are made (an output tree mirrors its input tree).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".part", dir=path.parent
        )
    except OSError as error:
        raise ImageError(f"cannot write to {path.parent}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "wb") as file:
            save(file)
        os.chmod(temporary, _new_file_mode())  # mkstemp makes it private (0600)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ImageError(f"cannot write: {error.strerror or error}") from None
        raise


def _new_file_mode() -> int:
    """Permissions an ordinary new file gets (0666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# ----------------------------------------------------------------------------- planning
