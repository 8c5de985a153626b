"""The one image decoder and folder reader: real formats, bad files, modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import UserError
from core.images import UnreadableImage, decode_folder, find_images, read_rgb
from dcgan.data import GANImageDataModule
from tests.conftest import SHARED_DATA, needs_shared_data


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def messy_folder(tmp_path):
    """A Fruits-360-like tree with every kind of file a real folder collects."""
    root = tmp_path / "Training ünïcode"
    rng = np.random.default_rng(0)
    _write(root / "Apple 1" / "rgb.jpg", rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
    _write(root / "Apple 1" / "gray.png", rng.integers(0, 255, (100, 100), dtype=np.uint8))
    _write(root / "Apple 1" / "rgba.png", rng.integers(0, 255, (100, 100, 4), dtype=np.uint8))
    _write(root / "Banana 1" / "deep.png", rng.integers(0, 65535, (100, 100)).astype(np.uint16))
    good = root / "Banana 1" / "good one.jpg"
    _write(good, rng.integers(0, 255, (80, 120, 3), dtype=np.uint8))
    (root / "Banana 1" / "zero.jpg").write_bytes(b"")
    (root / "Banana 1" / "not_an_image.png").write_text("hello")
    truncated = good.read_bytes()
    (root / "Banana 1" / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    (root / "Banana 1" / "notes.txt").write_text("ignored: not an image suffix")
    return root


def test_read_rgb_converts_every_mode(messy_folder):
    for name in ("Apple 1/rgb.jpg", "Apple 1/gray.png", "Apple 1/rgba.png", "Banana 1/deep.png"):
        image = read_rgb(messy_folder / name)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, name
    deep = read_rgb(messy_folder / "Banana 1" / "deep.png")
    assert deep.max() > 200  # 16-bit scaled down, not clipped to 255 everywhere
    assert deep.std() > 20


@pytest.mark.parametrize("name", ["zero.jpg", "not_an_image.png", "truncated.jpg"])
def test_read_rgb_rejects_bad_files_naming_them(messy_folder, name):
    with pytest.raises(UnreadableImage, match=name):
        read_rgb(messy_folder / "Banana 1" / name)


def test_decode_folder_skips_and_counts_bad_files(messy_folder, caplog):
    files = find_images(messy_folder)
    assert len(files) == 8  # notes.txt is not an image file
    decoded = decode_folder(files, lambda rgb: rgb[:10, :10])
    assert decoded.pixels.shape == (5, 10, 10, 3)
    assert sorted(p.split("/")[-1] for p in decoded.skipped) == ["not_an_image.png", "truncated.jpg", "zero.jpg"]
    assert "truncated.jpg" in caplog.text and "skipped 3 unreadable" in caplog.text
    labels, names = decoded.class_labels(messy_folder)
    assert names == ["Apple 1", "Banana 1"] and labels.tolist() == [0, 0, 0, 1, 1]


def test_decode_cache_hits_on_the_second_call(messy_folder, tmp_path):
    files = find_images(messy_folder, classes=["Apple 1"])
    calls = []
    transform = lambda rgb: (calls.append(1), rgb[:4, :4])[1]  # noqa: E731
    first = decode_folder(files, transform, cache_dir=tmp_path / "cache", cache_tag="t")
    second = decode_folder(files, transform, cache_dir=tmp_path / "cache", cache_tag="t")
    assert len(calls) == 3 and np.array_equal(first.pixels, second.pixels) and first.files == second.files


def test_folder_errors_name_the_path(tmp_path):
    with pytest.raises(UserError, match="data folder not found: .*missing"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        find_images(tmp_path / "empty")
    (tmp_path / "tree" / "Apple 1").mkdir(parents=True)
    with pytest.raises(UserError, match=r"class folder\(s\) \['Kiwi'\]"):
        find_images(tmp_path / "tree", classes=["Kiwi"])


def test_gan_datamodule_batches_are_in_unit_range(messy_folder):
    dm = GANImageDataModule(str(messy_folder), batch_size=2, image_size=64)
    dm.setup()
    assert dm.images.shape == (5, 3, 64, 64) and dm.images.dtype.is_floating_point is False
    batch = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert batch.shape == (2, 3, 64, 64) and -1 <= batch.min() and batch.max() <= 1


def test_gan_datamodule_max_images_keeps_every_class(tmp_path):
    from synthetic import make_fruits

    root = make_fruits(tmp_path / "fruits", classes=3, per_class=20)
    dm = GANImageDataModule(str(root), max_images=9)
    dm.setup()
    assert len(dm.images) == 9


def test_synthetic_sets_are_deterministic_and_in_the_real_formats(tmp_path):
    from core.voc import read_voc
    from synthetic import make_hardhat

    a = make_hardhat(tmp_path / "a", images=3, seed=5)
    b = make_hardhat(tmp_path / "b", images=3, seed=5)
    for stem in ("hard_hat_workers0", "hard_hat_workers2"):
        assert (a / "images" / f"{stem}.png").read_bytes() == (b / "images" / f"{stem}.png").read_bytes()
        ann = read_voc(a / "annotations" / f"{stem}.xml")
        assert ann.filename == f"{stem}.png" and (ann.width, ann.height) == (416, 416)
        assert ann.objects and {o.name for o in ann.objects} <= {"helmet", "head", "person"}
        assert all(0 <= o.xmin < o.xmax <= 416 and 0 <= o.ymin < o.ymax <= 416 for o in ann.objects)
    with pytest.raises(UserError, match="not made by the synthetic generator"):
        (tmp_path / "mine").mkdir()
        make_hardhat(tmp_path / "mine", images=1)


@needs_shared_data("fruits360", "Training")
def test_real_fruits360_reads_with_class_filter():
    dm = GANImageDataModule(str(SHARED_DATA / "fruits360" / "Training"), classes=["Banana 1", "Kiwi 1"], max_images=40)
    dm.setup()
    assert dm.images.shape == (40, 3, 64, 64)
    # Fruits-360: the object sits on a white background, so the corners are near white
    assert dm.images[:, :, 0, 0].float().mean() > 230


@needs_shared_data("hardhat-voc", "images")
def test_real_hardhat_images_read():
    dm = GANImageDataModule(str(SHARED_DATA / "hardhat-voc" / "images"), max_images=16)
    dm.setup()
    assert dm.images.shape == (16, 3, 64, 64) and not dm.skipped


def test_non_image_is_unreadable_even_after_ultralytics_patched_pil(tmp_path):
    import ultralytics.utils.patches  # noqa: F401  (ultralytics replaces PIL.Image.open when it is imported)

    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    with pytest.raises(UnreadableImage):
        read_rgb(bad)


# ---- EXIF orientation: what a viewer shows -------------------------------------------------------------


def _layout() -> np.ndarray:
    """An upright 48x32 (H x W) image no rotation or mirror maps onto itself: flat 16x16 blocks of six colours."""
    colours = np.array(
        [[230, 20, 20], [20, 200, 20], [20, 20, 230], [240, 240, 20], [20, 220, 220], [200, 20, 200]], np.uint8
    )
    return np.kron(colours.reshape(3, 2, 3), np.ones((16, 16, 1), np.uint8)).astype(np.uint8)


# how each EXIF orientation stores the upright image (TIFF/EXIF spec: the tag says how to turn it back)
STORED = {
    1: lambda a: a,
    2: np.fliplr,  # mirrored left-right
    3: lambda a: np.rot90(a, 2),  # upside down
    4: np.flipud,  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored along the main diagonal
    6: lambda a: np.rot90(a, 1),  # turned 90° counter-clockwise: shown after turning clockwise
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored along the other diagonal
    8: lambda a: np.rot90(a, -1),  # turned 90° clockwise
}


def _save_with_orientation(path, stored: np.ndarray, orientation: int, **kwargs):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(path, exif=exif.tobytes(), **kwargs)
    return path


@pytest.mark.parametrize("orientation", sorted(STORED))
def test_read_rgb_applies_every_exif_orientation(tmp_path, orientation):
    upright = _layout()
    stored = STORED[orientation](upright)
    path = _save_with_orientation(tmp_path / f"o{orientation}.png", stored, orientation)  # PNG: lossless, exact
    assert np.array_equal(read_rgb(path), upright)


@pytest.mark.parametrize("orientation", [6, 3, 8])
def test_read_rgb_shows_a_sideways_phone_jpeg_upright(tmp_path, orientation):
    upright = _layout()
    path = _save_with_orientation(
        tmp_path / "phone.jpg", STORED[orientation](upright), orientation, quality=95, subsampling=0
    )  # 4:4:4, so colour does not bleed across the blocks
    shown = read_rgb(path)
    assert shown.shape == upright.shape  # (48, 32, 3): H and W as displayed
    # flat blocks on the 16-pixel JPEG grid survive compression to within a few levels
    assert np.abs(shown.astype(int) - upright).max() <= 8


def test_decode_folder_sees_the_orientation(tmp_path):
    (tmp_path / "photos").mkdir()
    _save_with_orientation(tmp_path / "photos" / "phone.jpg", STORED[6](_layout()), 6, quality=95)
    assert decode_folder(find_images(tmp_path / "photos"), lambda rgb: rgb).pixels.shape == (1, 48, 32, 3)


# ---- modes: every one becomes 8-bit RGB with the right values ------------------------------------------


def test_read_rgb_converts_each_mode_to_the_right_rgb(tmp_path):
    palette = [0, 0, 0, 255, 0, 0, 0, 128, 255] + [0] * (256 * 3 - 9)
    p = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    p.putpalette(palette)
    p.save(tmp_path / "palette.png")
    p.save(tmp_path / "palette_transparent.png", transparency=1)  # index 1 transparent: its colour is kept
    p.convert("RGBA").save(tmp_path / "palette_alpha.gif")
    Image.fromarray(np.array([[0, 200], [255, 7]], np.uint8), "L").convert("LA").save(tmp_path / "la.png")
    Image.new("CMYK", (2, 2), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")  # full magenta+yellow: red
    Image.fromarray(np.array([[True, False], [False, True]])).save(tmp_path / "bits.png")
    Image.fromarray(np.array([[0, 65535], [32768, 257]], np.uint16)).save(tmp_path / "sixteen.png")
    Image.fromarray(np.array([[0, 1000], [500, 250]], np.int32), "I").save(tmp_path / "int32.tif")
    Image.fromarray(np.array([[0.0, 1.0], [0.5, 0.25]], np.float32), "F").save(tmp_path / "unit_float.tif")
    Image.fromarray(np.array([[0.0, 4.0], [2.0, np.nan]], np.float32), "F").save(tmp_path / "wide_float.tif")
    gray = lambda *v: np.repeat(np.array(v, np.uint8).reshape(2, 2, 1), 3, axis=2)  # noqa: E731
    red, blue, black = [255, 0, 0], [0, 128, 255], [0, 0, 0]
    expected = {
        "palette.png": [[black, red], [blue, red]],
        "palette_transparent.png": [[black, red], [blue, red]],
        "palette_alpha.gif": [[black, red], [blue, red]],
        "la.png": gray(0, 200, 255, 7),
        "cmyk.tif": [[red, red], [red, red]],
        "bits.png": gray(255, 0, 0, 255),
        "sixteen.png": gray(0, 255, 128, 1),
        "int32.tif": gray(0, 255, 128, 64),
        "unit_float.tif": gray(0, 255, 128, 64),
        "wide_float.tif": gray(0, 255, 128, 0),  # NaN → 0
    }
    for name, rgb in expected.items():
        image = read_rgb(tmp_path / name)
        assert image.dtype == np.uint8 and image.tolist() == np.asarray(rgb, np.uint8).tolist(), name


# ---- JPEG without its end marker: kept; truncated or empty: skipped, named, counted ------------------------


def _jpegs(folder, progressive=False):
    """complete.jpg, no_eoi.jpg (FF D9 dropped), half.jpg (cut in half), empty.jpg; returns the complete pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(14).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    _write(folder / "complete.jpg", rgb) if not progressive else Image.fromarray(rgb).save(
        folder / "complete.jpg", progressive=True
    )
    raw = (folder / "complete.jpg").read_bytes()
    assert raw.endswith(b"\xff\xd9")
    (folder / "no_eoi.jpg").write_bytes(raw[:-2])
    (folder / "half.jpg").write_bytes(raw[: len(raw) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    return raw


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_missing_only_its_end_marker_is_kept_with_a_warning(tmp_path, caplog, progressive):
    _jpegs(tmp_path, progressive)
    assert np.array_equal(read_rgb(tmp_path / "no_eoi.jpg"), read_rgb(tmp_path / "complete.jpg"))
    assert "no_eoi.jpg" in caplog.text and "end marker" in caplog.text
    (tmp_path / "lone_ff.jpg").write_bytes((tmp_path / "complete.jpg").read_bytes()[:-1])  # cut between FF and D9
    assert np.array_equal(read_rgb(tmp_path / "lone_ff.jpg"), read_rgb(tmp_path / "complete.jpg"))


@pytest.mark.parametrize("name", ["half.jpg", "empty.jpg"])
def test_truncated_and_empty_jpegs_are_unreadable_naming_them(tmp_path, name):
    _jpegs(tmp_path)
    with pytest.raises(UnreadableImage, match=name):
        read_rgb(tmp_path / name)


def test_jpeg_cut_just_before_its_last_bytes_of_image_data_is_unreadable(tmp_path):
    raw = _jpegs(tmp_path)
    (tmp_path / "short.jpg").write_bytes(raw[:-3])  # one byte of scan data lost as well as the marker
    with pytest.raises(UnreadableImage, match="short.jpg"):
        read_rgb(tmp_path / "short.jpg")


def test_progressive_jpeg_cut_between_scans_is_unreadable(tmp_path):
    raw = _jpegs(tmp_path, progressive=True)
    last_scan = raw.rindex(b"\xff\xda")
    assert (
        raw.count(b"\xff\xda") > 2
    )  # several scans: cutting before the last leaves a blurrier, complete-looking image
    (tmp_path / "between_scans.jpg").write_bytes(raw[:last_scan])
    with pytest.raises(UnreadableImage, match="between_scans.jpg"):
        read_rgb(tmp_path / "between_scans.jpg")


def test_decode_folder_keeps_the_jpeg_without_end_marker_and_counts_the_rest(tmp_path, caplog):
    _jpegs(tmp_path / "jpegs")
    decoded = decode_folder(find_images(tmp_path / "jpegs"), lambda rgb: rgb)
    assert sorted(Path(f).name for f in decoded.files) == ["complete.jpg", "no_eoi.jpg"]
    assert sorted(Path(f).name for f in decoded.skipped) == ["empty.jpg", "half.jpg"]
    assert "skipped 2 unreadable file(s) of 4" in caplog.text


def test_swap_red_blue_is_the_reversed_channels_as_a_contiguous_copy_also_of_a_crop():
    """The one RGB <-> BGR conversion (cv2's writers, drawing, capture frames): on a whole frame and on a crop of
    one (a strided view, as face crops are), equal to the reversed channels, contiguous, and the input unchanged."""
    from core.images import swap_red_blue

    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    before = frame.copy()
    for image in (frame, frame[5:30, 7:50]):
        swapped = swap_red_blue(image)
        np.testing.assert_array_equal(swapped, image[..., ::-1])
        assert swapped.flags.c_contiguous and not np.shares_memory(swapped, frame)
    np.testing.assert_array_equal(frame, before)
    np.testing.assert_array_equal(swap_red_blue(swap_red_blue(frame)), frame)
