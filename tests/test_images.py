"""The one image decoder and folder reader: real formats, bad files, modes."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.errors import UserError
from datamodules.gan import GANImageDataModule
from datamodules.images import UnreadableImage, decode_folder, find_images, read_rgb
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
    from datamodules.synthetic import make_fruits

    root = make_fruits(tmp_path / "fruits", classes=3, per_class=20)
    dm = GANImageDataModule(str(root), max_images=9)
    dm.setup()
    assert len(dm.images) == 9


def test_synthetic_sets_are_deterministic_and_in_the_real_formats(tmp_path):
    from datamodules.synthetic import make_hardhat
    from datamodules.voc import read_voc

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
