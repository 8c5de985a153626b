"""Reading image folders: one decoder, one bad-file policy, one decoded cache.

Every reader in the repo decodes still images through `read_rgb`, so EXIF orientation, image modes,
JPEGs without their end marker, and corrupt, truncated, zero-byte and non-image files are handled the
same way everywhere (detection, recognition, prediction, training data, VOC conversion, reports).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import UserError
from core.files import atomic_write

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}  # what OpenCV's FFmpeg backend reads here
# Pillow refuses images above MAX_IMAGE_PIXELS (its decompression-bomb guard, 89.5 MP warns, twice that refuses);
# a 192 MP panorama is a real photo: the limit is a setting, in pixels (0 or "none": no limit).
MAX_PIXELS_ENV = "ML_PLAYGROUND_MAX_IMAGE_PIXELS"
_limit = os.environ.get(MAX_PIXELS_ENV, "").strip().lower()
if _limit:
    Image.MAX_IMAGE_PIXELS = None if _limit in ("0", "none") else int(float(_limit))


@dataclass
class InputListing:
    """What a folder (or one file) holds for a tool: `files` it will read (sorted), and `left_out` {file: why} for
    every other file it found (another type, a video where images are read, a symlink loop), so no input is dropped
    without a word."""

    files: list[Path]
    left_out: dict[Path, str] = field(default_factory=dict)

    def summary(self, limit: int = 3) -> str:
        """ "" when nothing was left out, else "; left out N file(s): a (why), b (why) …"."""
        if not self.left_out:
            return ""
        shown = ", ".join(f"{p.name} ({why})" for p, why in list(self.left_out.items())[:limit])
        more = f" and {len(self.left_out) - limit} more" if len(self.left_out) > limit else ""
        return f"; left out {len(self.left_out)} file(s): {shown}{more}"


def list_inputs(root: str | Path, suffixes: set[str] | frozenset[str] = frozenset(IMAGE_SUFFIXES)) -> InputListing:
    """Every file under `root` with one of `suffixes` (lower-case, with the dot), recursively and sorted, following
    symlinked folders and files (a folder reached twice, a symlink loop, is listed once and named); hidden entries
    (".name") are skipped as every file browser does. `root` may be one file: it is the listing when its suffix is
    one of `suffixes`. Every other file is in `left_out` with its reason. Raises UserError when `root` does not
    exist, or is a file of another type."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() not in suffixes:
            raise UserError(f"{root}: not a file this tool reads (it reads {', '.join(sorted(suffixes))})")
        return InputListing([root])
    files, left_out, seen = [], {}, {}
    for folder, dirs, names in os.walk(root, followlinks=True):
        here = Path(folder)
        key = (os.stat(here).st_dev, os.stat(here).st_ino)
        if key in seen:
            left_out[here] = f"a folder already listed as {seen[key]} (symlink loop)"
            dirs[:] = []
            continue
        seen[key] = here
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in names if not n.startswith(".")):
            path = here / name
            suffix = path.suffix.lower()
            if not path.exists():
                left_out[path] = "a broken symlink"
            elif suffix in suffixes:
                files.append(path)
            elif suffix in VIDEO_SUFFIXES:
                left_out[path] = "a video; this tool reads images"
            elif suffix in IMAGE_SUFFIXES:
                left_out[path] = "an image; this tool reads videos"
            else:
                left_out[path] = f"not an image or video ({suffix or 'no suffix'})"
    return InputListing(sorted(files), dict(sorted(left_out.items())))


def is_clip(path: str | Path) -> bool:
    """Whether a video reader should take `path` frame by frame: a video file (`VIDEO_SUFFIXES`), or an animated GIF
    (more than one frame; OpenCV's FFmpeg backend decodes it with its frame times, as ultralytics' video loader
    does). An unreadable GIF is not a clip: the image reader names it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return True
    if suffix != ".gif":
        return False
    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError):
        return False


def swap_red_blue(image: np.ndarray) -> np.ndarray:
    """A contiguous copy (H, W, 3) of `image` (H, W, 3) with its first and last channels swapped: RGB to OpenCV's
    BGR, or back, for cv2's writers, encoders and drawing. `cv2.cvtColor` takes 0.3 ms for a 1280×720 uint8 frame
    here, where a reversed channel view made contiguous (`np.ascontiguousarray(rgb[..., ::-1])`) took 8.9 ms: it
    runs per frame in the monitor, prediction on videos and capture."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


class UnreadableImage(Exception):
    """A file that is not a decodable image; callers skip and count it. The message starts with the path."""


def _open(source, label) -> Image.Image:
    """`Image.open(source)` (a path or a binary file object), with Pillow's warning about a very large image (which
    names no file) logged with `label` (the file's name) and size instead."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        image = Image.open(source)
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            width, height = image.size
            log.warning(
                "%s: %d×%d, %.1f MP: a very large image, decoded whole (%.1f GB as RGB)",
                label,
                width,
                height,
                width * height / 1e6,
                width * height * 3 / 2**30,
            )
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return image


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to an (H, W, 3) uint8 RGB array, as an image viewer shows it.

    - EXIF orientation is applied (a phone photo stored sideways with Orientation=6 comes out upright,
      H and W as displayed).
    - Every mode becomes 8-bit RGB: alpha and palette transparency are dropped (the stored colours are
      kept), gray and 1-bit are expanded, CMYK converted, 16-bit (I;16) scaled by 255/65535, 32-bit
      integer (I) scaled by its maximum, float (F) scaled by 255 when its values lie in [0, 1], else by
      its maximum.
    - A JPEG whose end marker (FF D9) is missing but whose pixel data is complete is kept, with a
      warning naming it (see `_jpeg_without_end_marker`).

    Raises `UnreadableImage`, its message starting with the path, for empty, truncated, corrupt and
    non-image files and for modes Pillow cannot convert.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableImage(f"{path}: {exc}") from exc
    return _decode(path, path, size, path.read_bytes)


def decode_rgb(data: bytes, name: str = "image") -> np.ndarray:
    """`read_rgb` on an encoded image held in memory (the bytes of a JPEG, PNG, … file, e.g. an HTTP request's):
    the same (H, W, 3) uint8 RGB array as `read_rgb` gives for a file of these bytes. `name` stands for the path in
    messages and warnings. Raises `UnreadableImage`, its message starting with `name`, as `read_rgb` does."""
    import io

    return _decode(io.BytesIO(data), name, len(data), lambda: data)


def _decode(source, label, size: int, read_bytes) -> np.ndarray:
    """`read_rgb`'s decoding of `source` (a path or a binary file object) of `size` bytes, named `label` in
    messages; `read_bytes()` gives its bytes for the JPEG end-marker repair."""
    try:
        if size == 0:
            raise UnreadableImage(f"{label}: empty file (0 bytes)")
        with _open(source, label) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:  # an animated GIF, a multi-page TIFF: the still the viewer shows first
                log.warning("%s: %d frames/pages; only the first is read", label, frames)
            try:
                image.load()  # forces a full decode: truncated files raise here, not later
            except OSError as exc:
                if image.format != "JPEG":
                    raise
                whole = _jpeg_without_end_marker(read_bytes())
                if whole is None:
                    raise UnreadableImage(f"{label}: JPEG image data incomplete ({exc})") from exc
                log.warning("%s: JPEG end marker (FF D9) missing, image data complete; kept", label)
                with whole:
                    return _to_rgb(whole, label)
            return _to_rgb(image, label)
    # ImportError: once ultralytics is imported, its patched Image.open looks for a HEIF plugin on files PIL
    # cannot identify, and raises that instead of UnidentifiedImageError.
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) / 1e6:.1f} MP" if pixels else "too large"
        limit = (Image.MAX_IMAGE_PIXELS or 0) * 2  # Pillow refuses at twice MAX_IMAGE_PIXELS
        raise UnreadableImage(
            f"{label}: {size}, above the image-size limit of {limit / 1e6:.1f} MP; "
            f"set {MAX_PIXELS_ENV}=<pixels> (or none) to read it"
        ) from exc
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        ImportError,
        struct.error,
    ) as exc:
        # ultralytics' patched Image.open names the HEIF plugin it looked for, not what is wrong with the data
        reason = "cannot identify image file" if isinstance(exc, ImportError) else exc
        raise UnreadableImage(f"{label}: {reason}") from exc


def _to_rgb(image: Image.Image, path: Path | str) -> np.ndarray:
    """(H, W, 3) uint8 of a loaded image, EXIF orientation applied; see `read_rgb` for each mode."""
    try:
        upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError, struct.error) as exc:
        # a damaged EXIF block does not make the pixels unreadable: keep them as stored, say so
        log.warning("%s: EXIF orientation unreadable (%s); pixels used as stored", path, exc)
        upright = image
    mode = upright.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        wide = np.asarray(upright, dtype=np.float64)
        wide = np.where(np.isfinite(wide), wide, 0.0)
        if mode.startswith("I;16"):
            peak = 65535.0
        elif mode == "F" and wide.max(initial=0.0) <= 1.0:
            peak = 1.0
        else:
            peak = max(float(wide.max(initial=0.0)), 1.0)
        gray = np.clip(wide / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode in ("P", "PA") or (mode == "L" and "transparency" in upright.info):
        # via RGBA: converting a palette image with transparency straight to RGB makes Pillow warn
        upright = upright.convert("RGBA")
    return np.asarray(upright.convert("RGB"), dtype=np.uint8).copy()


# Fill bytes appended after a JPEG's data to see whether the decoder needs any more of it: if the
# decoded pixels are the same whatever follows, the image data was complete. 0x00 bits are what libjpeg
# substitutes at a marker (the plain FF D9 case); 0xAA and 0x55 differ from them and each other in every bit.
_FILLS = (b"", b"\xaa" * 256, b"\x55" * 256)
_EOI = b"\xff\xd9"


def _jpeg_without_end_marker(data: bytes) -> Image.Image | None:
    """The loaded image of a JPEG whose strict decode ran out of data, if only the end marker is missing.

    Kept only when (1) every component's every DCT coefficient is covered by a scan present in the file
    (so a progressive JPEG cut between scans, which decodes to a blurrier image, is refused), and (2) the
    pixels decoded from the data followed by each of `_FILLS` and FF D9 are identical: the decoder did not
    use a single bit past the file's end, so the last scan is complete. Measured on generated baseline,
    progressive and optimised JPEGs cut at every one of their last 120 bytes and at random points: kept
    exactly those cut at the end marker, each pixel-identical to the complete file. None otherwise.
    Pillow's ImageFile.LOAD_TRUNCATED_IMAGES, and appending FF D9 alone, also "succeed" on files cut in
    half (the missing blocks come out flat gray), so neither tells the two apart.
    """
    if data.endswith(b"\xff"):
        data = data[:-1]  # cut between FF and D9: a lone FF can only start the marker
    if not _scans_cover_every_coefficient(data):
        return None
    decoded = []
    for fill in _FILLS:
        try:
            image = Image.open(io.BytesIO(data + fill + _EOI))
            image.load()
        except (OSError, ValueError, SyntaxError, struct.error):
            return None
        decoded.append(image)
    first = np.asarray(decoded[0])
    if all(np.array_equal(first, np.asarray(other)) for other in decoded[1:]):
        return decoded[0]
    return None


_SOF_DCT = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive Huffman: what Pillow decodes


def _scans_cover_every_coefficient(data: bytes) -> bool:
    """Whether the JPEG's scans (SOS headers, ITU T.81 B.2.3) bring all 64 coefficients of every frame
    component to full precision (a scan with Al = 0 covering them). Walks markers; skips entropy-coded data."""
    pos, components, done = 2, None, {}
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos + 4 : pos + 2 + length]
        if length < 2 or len(segment) < length - 2:
            break  # cut inside a marker segment
        pos += 2 + length
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _SOF_DCT or len(segment) < 6:
                return False
            components = {segment[6 + 3 * i] for i in range(segment[5]) if 6 + 3 * i < len(segment)}
        elif marker == 0xDA and segment:
            n = segment[0]
            if len(segment) < 4 + 2 * n:
                return False
            ss, se, al = segment[1 + 2 * n], segment[2 + 2 * n], segment[3 + 2 * n] & 0x0F
            if al == 0:
                for component in (segment[1 + 2 * i] for i in range(n)):
                    done.setdefault(component, set()).update(range(ss, se + 1))
            while True:  # entropy-coded data runs to the next FF that is not stuffing (FF 00) or a restart marker
                j = data.find(b"\xff", pos)
                if j < 0 or j + 1 >= len(data):
                    pos = len(data)
                    break
                following = data[j + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    pos = j + 2
                elif following == 0xFF:
                    pos = j + 1
                else:
                    pos = j
                    break
    return bool(components) and all(done.get(c, set()) >= set(range(64)) for c in components)


def find_images(root: str | Path, classes: Sequence[str] | None = None) -> list[Path]:
    """Image files under `root` (`list_inputs`: recursively, sorted, symlinked folders followed); with `classes`,
    only under those sub-folders. Every other file found is named in one warning with its reason."""
    root = Path(root)
    if root.is_file():
        raise UserError(
            f"{root} is a file; the data config needs a folder of images (one sub-folder per class), "
            "e.g. its parent folder"
        )
    if not root.is_dir():
        raise UserError(f"data folder not found: {root} — point the data config at an existing folder (docs/data.md)")
    if classes:
        missing = [name for name in classes if not (root / name).is_dir()]
        if missing:
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise UserError(f"class folder(s) {missing} not in {root}; present: {present[:20]}")
        dirs = [root / name for name in classes]
    else:
        dirs = [root]
    listings = [list_inputs(d) for d in dirs]
    files = sorted(p for listing in listings for p in listing.files)
    left_out = InputListing(files, {p: why for listing in listings for p, why in listing.left_out.items()})
    if left_out.left_out:
        log.warning("%s: %d image file(s)%s", root, len(files), left_out.summary(limit=10))
    if not files:
        raise UserError(
            f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}"
            + (f" for classes {list(classes)}" if classes else "")
        )
    return files


@dataclass
class DecodedImages:
    """A folder decoded to one uint8 array (N, H, W, 3), with the files behind each row and those skipped."""

    pixels: np.ndarray
    files: list[str]
    skipped: list[str] = field(default_factory=list)

    def class_labels(self, root: str | Path) -> tuple[np.ndarray, list[str]]:
        """Labels from each file's first folder below `root` (the image-folder convention)."""
        parts = [Path(f).relative_to(root).parts[0] for f in self.files]
        names = sorted(set(parts))
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[p] for p in parts], dtype=np.int64), names


def decode_folder(
    files: Sequence[Path],
    transform: Callable[[np.ndarray], np.ndarray],
    cache_dir: str | Path | None = None,
    cache_tag: str = "",
) -> DecodedImages:
    """Decode and transform every file once; bad files are skipped with a warning naming each.

    With `cache_dir`, the result is kept on disk keyed by the files (path, size, mtime) and `cache_tag`
    (which must describe the transform), so a second run skips decoding entirely. Processes that decode
    the same folder at once (DDP ranks, sweep jobs) each write the entry atomically and get equal results.
    Raises `UserError` when no file decodes.
    """
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha1(cache_tag.encode())
        for f in files:
            stat = f.stat()
            key.update(f"{f}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        cache_file = Path(cache_dir) / f"decoded-{key.hexdigest()[:16]}.npz"
        if cache_file.exists():
            with np.load(cache_file, allow_pickle=False) as cached:
                meta = json.loads(str(cached["meta"]))
                return DecodedImages(cached["pixels"], meta["files"], meta["skipped"])

    from tqdm.auto import tqdm

    pixels, kept, skipped = [], [], []
    for f in tqdm(
        files,
        desc=f"decoding {Path(files[0]).parent.name if files else ''}",
        unit="img",
        leave=False,
        disable=len(files) < 200,
    ):
        try:
            pixels.append(transform(read_rgb(f)))
            kept.append(str(f))
        except UnreadableImage as exc:
            skipped.append(str(f))
            log.warning("skipped unreadable image %s", exc)
    if not kept:
        raise UserError(f"none of the {len(files)} image files could be decoded (first: {files[0]})")
    if skipped:
        log.warning("skipped %d unreadable file(s) of %d", len(skipped), len(files))
    result = DecodedImages(np.stack(pixels), kept, skipped)
    if cache_file is not None:
        # DDP ranks and parallel sweep jobs may decode the same cold folder at once: each writes its own
        # temporary file and renames it over the entry (same content), so none reads or removes another's
        with atomic_write(cache_file) as handle:
            np.savez(handle, pixels=result.pixels, meta=json.dumps({"files": kept, "skipped": skipped}))
    return result
