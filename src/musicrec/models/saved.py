"""Reading a saved model folder that may come from elsewhere (``dvc get``): every size it
declares is checked before anything of that size is allocated.

The content models' ``load`` (``cnn``, ``dbn``, ``bow``) read ``config.json`` through these
functions: each size a whole number within fixed bounds (:data:`MAX_WIDTH`, :data:`MAX_LAYERS`,
:data:`MAX_ROWS`, :data:`MAX_FRAMES`) and, where the caller knows them, equal to the split's
numbers of users and songs; the arrays of a ``.npz`` and the tensors of a weights file held to
the shapes the folder declares, read from their headers (the weights memory-mapped), so that a
hostile ``config.json`` is refused with an error naming the file, the field, the declared value
and the expected one instead of exhausting memory.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import torch

from musicrec.errors import MusicrecError

MAX_WIDTH = 1 << 16  # the largest layer, input, factor or vocabulary size a model may declare
MAX_LAYERS = 16  # the most layers
MAX_ROWS = 1 << 31  # the most users or songs
MAX_FRAMES = 1 << 16  # the longest window, kernel or pool, and the most clips a song
_REFETCH = (
    "the model folder is damaged or was not written by this version of musicrec for this "
    "split: fetch it again or retrain it (dvc repro)"
)


def refusal(path: Path, what: str) -> MusicrecError:
    """The error that refuses ``path``, saying ``what`` is wrong and what to do."""
    return MusicrecError(f"{path}: {what}; {_REFETCH}")


def read_meta(path: Path) -> dict:
    """``path``'s JSON object."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise refusal(path, f"not readable JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise refusal(path, "not a JSON object")
    return meta


def meta_section(path: Path, meta: dict, key: str) -> dict:
    """``meta[key]``, which must be a JSON object."""
    value = meta.get(key)
    if not isinstance(value, dict):
        raise refusal(path, f"{key} is {value!r:.60}, expected a JSON object")
    return value


def int_field(path: Path, field: str, value: object, low: int, high: int) -> int:
    """``value``, the ``field`` of ``path``, if it is an integer from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise refusal(path, f"{field} is {value!r:.60}, expected an integer from {low} to {high}")
    return value


def int_list(path: Path, field: str, value: object, low: int, high: int) -> list[int]:
    """``value``, a list of 1 to :data:`MAX_LAYERS` integers from ``low`` to ``high``."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LAYERS:
        raise refusal(path, f"{field} is {value!r:.60}, expected a list of 1 to {MAX_LAYERS}")
    return [int_field(path, f"{field}[{i}]", v, low, high) for i, v in enumerate(value)]


def check_split(path: Path, field: str, declared: object, expected: int | None, what: str) -> None:
    """Refuse ``path`` if its ``field`` is not the split's number of ``what`` (when known)."""
    if expected is not None and declared != expected:
        raise refusal(
            path, f"{field} is {declared!r:.60}, expected {expected} (the split's {what})"
        )


def make_settings(path: Path, key: str, cls: type, values: dict):
    """``cls(**values)``, a settings dataclass, or an error naming the file."""
    try:
        return cls(**values)
    except (TypeError, ValueError, MusicrecError) as exc:
        raise refusal(path, f"{key}: {exc}") from exc


def npz_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each array's shape in the ``.npz`` at ``path``, from the arrays' headers alone.

    Every array must be stored uncompressed (as ``np.savez`` writes it), of a numeric dtype,
    and hold exactly the bytes its header declares, the members together no more than the
    file holds: ``np.load`` allocates what a header declares before it reads, so a header
    that lies, or a compressed member (a zip bomb), is refused here.
    """
    readers = {1: np.lib.format.read_array_header_1_0, 2: np.lib.format.read_array_header_2_0}
    shapes = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if sum(m.file_size for m in members) > Path(path).stat().st_size:
                raise refusal(path, "its members declare more bytes than the file holds")
            for member in members:
                name = member.filename.removesuffix(".npy")
                if member.compress_type != zipfile.ZIP_STORED:
                    raise refusal(path, f"{name!r:.60} is compressed, expected stored as saved")
                with archive.open(member) as f:
                    major, _ = np.lib.format.read_magic(f)
                    shape, _, dtype = readers[major](f)
                    data_bytes = member.file_size - f.tell()
                if dtype.kind not in "biuf" or dtype.hasobject:
                    raise refusal(path, f"{name!r:.60} has dtype {dtype}, expected a number type")
                declared = math.prod(shape) * dtype.itemsize
                if declared != data_bytes:
                    raise refusal(
                        path, f"{name!r:.60} declares {declared} bytes and holds {data_bytes}"
                    )
                shapes[name] = shape
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise refusal(path, f"not an archive of arrays ({exc!r:.80})") from exc
    return shapes


def check_shapes(path: Path, found: dict, expected: dict[str, tuple[int, ...]]) -> None:
    """Refuse ``path`` unless it holds exactly the arrays of ``expected``, of those shapes."""
    for name in sorted(found.keys() | expected.keys(), key=str):
        have, want = found.get(name), expected.get(name)
        if have != want:
            have = f"shape {have}" if name in found else "absent"
            want = f"shape {want}" if name in expected else "absent"
            raise refusal(path, f"{name!r:.60} is {have}, expected {want} by the folder's sizes")


def read_weights(path: Path, skeleton: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, once its tensors have the names and shapes of
    ``skeleton``'s (a module on the meta device). The file is memory-mapped, so reading it
    allocates nothing; only weights that fit go into a real module."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a bad archive, a refused pickle: torch's errors share no base
        raise refusal(path, f"not a weights file torch reads safely ({exc!r:.120})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise refusal(path, "not a state dict of tensors")
    found = {k: tuple(v.shape) for k, v in state.items()}
    check_shapes(path, found, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()})
    return state


def vector_length(shape: tuple[int, ...] | None) -> int | tuple[int, ...] | None:
    """A vector's length from its ``shape`` (anything else as it is, for the error)."""
    return shape[0] if shape is not None and len(shape) == 1 else shape


def check_bounded(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse ``path`` if an array of it has more than two axes or an axis over
    :data:`MAX_WIDTH`: for a model whose arrays are all small (weights, scales)."""
    for name, shape in sorted(shapes.items()):
        if len(shape) > 2 or any(size > MAX_WIDTH for size in shape):
            raise refusal(
                path, f"{name!r:.60} is shape {shape}, expected at most 2 axes of {MAX_WIDTH}"
            )
