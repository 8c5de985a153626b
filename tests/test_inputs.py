"""Every input used or named: folders listed through symlinks with a loop guard and sub-folders, one file where a
folder is expected, other file types named with their reason; a gallery photo of several people used only when
the person's face can be told apart; very large images named, with the setting that lifts the limit."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import pytest
from PIL import Image

from core.errors import UserError
from core.images import InputListing, UnreadableImage, find_images, list_inputs, read_rgb
from faces import Detection
from faces.gallery import build_gallery, face_of_person, gallery_photos
from tests.test_gallery import MeanColour


def _png(path, colour=(120, 60, 30), size=(40, 40)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), colour, np.uint8)).save(path)
    return path


def test_a_folder_is_listed_through_symlinks_once_with_every_other_file_named(tmp_path):
    photos, archive = tmp_path / "photos", tmp_path / "archive"
    _png(photos / "2024" / "a.jpg")
    _png(archive / "2025" / "b.png")
    _png(archive / "loose" / "c.png")
    os.symlink(archive / "2025", photos / "2025")  # a year folder kept elsewhere
    os.symlink(archive / "loose" / "c.png", photos / "c.png")  # a file kept elsewhere
    os.symlink(photos, photos / "2024" / "back")  # a loop
    (photos / "clip.mp4").write_bytes(b"\0")
    (photos / "notes.txt").write_text("x")
    (photos / ".DS_Store").write_bytes(b"\0")  # hidden: skipped, as a file browser does
    os.symlink(tmp_path / "gone.jpg", photos / "gone.jpg")
    listing = list_inputs(photos)
    assert [p.relative_to(photos).as_posix() for p in listing.files] == ["2024/a.jpg", "2025/b.png", "c.png"]
    assert {p.relative_to(photos).as_posix(): why for p, why in listing.left_out.items()} == {
        "2024/back": f"a folder already listed as {photos} (symlink loop)",
        "clip.mp4": "a video; this tool reads images",
        "gone.jpg": "a broken symlink",
        "notes.txt": "not an image or video (.txt)",
    }
    assert listing.summary(limit=1) == "; left out 4 file(s): back (a folder already listed as " + str(photos) + (
        " (symlink loop)) and 3 more"
    )
    # one file where a folder is expected is the listing; a file of another kind is an error naming it
    assert list_inputs(photos / "2024" / "a.jpg") == InputListing([photos / "2024" / "a.jpg"])
    with pytest.raises(UserError, match=rf"^{photos / 'notes.txt'}: not a file this tool reads"):
        list_inputs(photos / "notes.txt")
    with pytest.raises(UserError, match="no such file or folder"):
        list_inputs(tmp_path / "missing")


def test_training_data_follows_a_symlinked_class_folder_and_names_a_file_given_as_the_folder(tmp_path, caplog):
    training, pool = tmp_path / "Training", tmp_path / "pool"
    for k in range(3):
        _png(training / "Apple Golden 1" / f"{k}_100.jpg")
        _png(pool / "Banana 1" / f"{k}_100.jpg")
    os.symlink(pool / "Banana 1", training / "Banana 1")
    (training / "Apple Golden 1" / "readme.md").write_text("x")
    with caplog.at_level(logging.WARNING, logger="core.images"):
        files = find_images(training)
    assert sorted({f.parent.name for f in files}) == ["Apple Golden 1", "Banana 1"] and len(files) == 6
    assert "left out 1 file(s): readme.md (not an image or video (.md))" in caplog.text
    assert len(find_images(training, classes=["Banana 1"])) == 3
    with pytest.raises(UserError, match=r"is a file; the data config needs a folder of images"):
        find_images(files[0])


def test_a_gallery_reads_sub_folders_and_names_empty_people_and_loose_files(tmp_path, caplog):
    known = tmp_path / "known"
    _png(known / "ann" / "2023" / "a.png")
    _png(known / "ann" / "b.png")
    (known / "bob").mkdir()
    _png(known / "group.png")
    with caplog.at_level(logging.WARNING, logger="faces.gallery"):
        people = gallery_photos(known)
    assert people == {"ann": [known / "ann" / "2023" / "a.png", known / "ann" / "b.png"]}
    assert "no photo in the folder(s) of bob" in caplog.text
    assert "1 file(s) beside the person folders, not used (put each in its person's folder): group.png" in caplog.text


class Patches:
    """A detector stand-in: one face per 20-px patch that is not the grey background."""

    name = "patches"

    def __repr__(self):
        return "Patches()"

    def detect(self, rgb):
        faces = []
        for top in range(0, rgb.shape[0], 20):
            for left in range(0, rgb.shape[1], 20):
                if (rgb[top : top + 20, left : left + 20] != 128).any():
                    faces.append(Detection(left, top, left + 20, top + 20, 1.0))
        return faces


def _photo(path, colours):
    """Patches of `colours` (RGB) side by side on grey, 20 px each."""
    image = np.full((20, 20 * len(colours), 3), 128, np.uint8)
    for k, colour in enumerate(colours):
        image[:, 20 * k : 20 * (k + 1)] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image[..., ::-1])
    return path


def test_a_group_photo_teaches_the_gallery_only_the_face_that_matches_the_persons_other_photos(tmp_path, caplog):
    known, ann, stranger, lookalike = tmp_path / "known", (200, 0, 0), (0, 0, 200), (190, 10, 0)
    _photo(known / "ann" / "1.png", [ann])
    _photo(known / "ann" / "2.png", [(205, 0, 5)])
    _photo(known / "ann" / "party.png", [stranger, ann])  # the stranger nearer the centre
    _photo(known / "ann" / "twins.png", [ann, lookalike])  # two faces close to ann's: cannot be told apart
    _photo(known / "bob" / "team.png", [(0, 200, 0), (0, 190, 10)])  # bob has no one-face photo
    _photo(known / "cy" / "1.png", [(0, 0, 90)])
    with caplog.at_level(logging.WARNING, logger="faces.gallery"):
        gallery = build_gallery(known, Patches(), MeanColour())
    assert gallery.names == ["ann", "ann", "ann", "cy"]
    assert gallery.files[2] == str(known / "ann" / "party.png")
    np.testing.assert_allclose(gallery.descriptors[2], np.array(ann) / 255, atol=1e-6)  # ann's face, not the stranger's
    assert set(gallery.skipped) == {str(known / "ann" / "twins.png"), str(known / "bob" / "team.png")}
    assert (
        gallery.reasons[str(known / "bob" / "team.png")]
        == "2 faces and no one-face photo of bob to tell which is theirs"
    )
    assert gallery.reasons[str(known / "ann" / "twins.png")].startswith(
        "2 faces, 2 of them within 0.6 of ann's other photos (mean distances "
    )
    assert f"gallery: left out {known / 'ann' / 'twins.png'}: 2 faces, 2 of them" in caplog.text
    # the rule itself: exactly one face within dlib's 0.6 of the person's other photos
    references = np.array([[0.0, 0.0], [0.2, 0.0]])
    assert face_of_person(np.array([[3.0, 0.0], [0.1, 0.1]]), references, "ann")[0] == 1
    assert face_of_person(np.array([[3.0, 0.0], [2.0, 0.0]]), references, "ann")[0] is None  # nobody is ann


def test_very_large_images_are_named_with_the_setting_that_lifts_the_limit(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warns above 1,000 pixels, refuses above 2,000
    large, huge = _png(tmp_path / "large.png", size=(30, 50)), _png(tmp_path / "huge.png", size=(50, 50))
    with caplog.at_level(logging.WARNING, logger="core.images"):
        assert read_rgb(large).shape == (30, 50, 3)
    assert f"{large}: 50×30, 0.0 MP: a very large image, decoded whole" in caplog.text
    with pytest.raises(
        UnreadableImage,
        match=rf"^{huge}: 0.0 MP, above the image-size limit of 0.0 MP; set "
        r"ML_PLAYGROUND_MAX_IMAGE_PIXELS=<pixels> \(or none\) to read it",
    ):
        read_rgb(huge)


def test_an_animated_gif_is_read_at_its_first_frame_and_named(tmp_path, caplog):
    frames = [Image.fromarray(np.full((10, 10, 3), v, np.uint8)) for v in (0, 128, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert list_inputs(tmp_path).files == [tmp_path / "anim.gif"]
    with caplog.at_level(logging.WARNING, logger="core.images"):
        assert read_rgb(tmp_path / "anim.gif").max() == 0
    assert "anim.gif: 3 frames/pages; only the first is read" in caplog.text


def test_a_tool_that_reads_videos_reads_every_frame_of_an_animated_gif(tmp_path):
    """predict-facemask's reader (a folder, one file): an animated GIF is a clip, a still GIF an image."""
    from core.images import is_clip
    from experiments.predict_facemask import frames

    shots = [Image.fromarray(np.full((32, 48, 3), v, np.uint8)) for v in (0, 128, 255)]
    shots[0].save(tmp_path / "anim.gif", save_all=True, append_images=shots[1:], duration=100)
    shots[1].save(tmp_path / "still.gif")
    assert is_clip(tmp_path / "anim.gif") and not is_clip(tmp_path / "still.gif")
    read = [(name, index) for name, index, _, _ in frames(tmp_path, None)]
    assert read == [("anim.gif", 0), ("anim.gif", 1), ("anim.gif", 2), ("still.gif", 0)]
    times = [time_s for *_, time_s, _ in frames(tmp_path / "anim.gif", None)]
    assert times == pytest.approx([0.0, 0.1, 0.2], abs=0.011)
