"""Face recognition training: head and freezing, VGG16 weight conversion, feature cache, datamodule
checks, and a two-step run through the train entry into a temporary MLflow store."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.errors import UserError
from faces.classifier import FaceClassifier
from faces.data import FaceIdentityDataModule
from faces.descriptors import vgg16_features
from faces.feature_cache import FeatureCache
from faces.vgg16_weights import (
    CAFFE_MEAN_BGR,
    CONV_INDICES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KERAS_CONV_NAMES,
    keras_h5_to_torch,
    load_vgg16_features,
)
from tests.conftest import compose, mlflow_runs


def test_head_shapes_and_frozen_backbone_gets_no_gradients():
    model = FaceClassifier(
        backbone="vgg16", image_size=64, hidden=(32, 16, 8), dropout=0.0, class_names=["a", "b", "c"]
    )
    linears = [m for m in model.head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 32), (32, 16), (16, 8), (8, 3)]
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    logits = model(images)
    assert logits.shape == (2, 3)
    F.cross_entropy(logits, torch.tensor([0, 2])).backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert model.backbone.frozen
    assert model.head_logits(torch.randn(2, 512)).shape == (2, 3)  # cached features take the same head


def test_last_block_unfrozen_and_flatten_head():
    model = FaceClassifier(
        backbone="vgg16", image_size=64, pool="flatten", train_last_blocks=1, hidden=(8, 8, 8), class_names=["a", "b"]
    )
    assert model.head[0].in_features == 512 * 2 * 2  # Flatten of a 2×2×512 map, as the paper's head
    F.cross_entropy(model(torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)), torch.tensor([0, 1])).backward()
    features = model.backbone.features
    assert all(p.grad is not None for p in features[24:].parameters())  # block 5 trains
    assert all(p.grad is None for p in features[:24].parameters())
    assert not model.backbone.frozen
    with pytest.raises(UserError, match="data.serves=images"):  # a backbone that trains cannot take cached features
        FaceClassifier(backbone="vgg16", image_size=64, train_last_blocks=1, inputs="features", class_names=["a", "b"])


def _write_keras_h5(path, rng, nested: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A random VGG16 notop file in Keras 2's layout (`block1_conv1_W_1:0`) or tf.keras' nested one."""
    channels = [3, 64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    weights = {}
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if nested else f
        root.attrs["layer_names"] = [b"input_1", *(n.encode() for n in KERAS_CONV_NAMES)]
        for k, name in enumerate(KERAS_CONV_NAMES):
            kernel = rng.normal(0, 0.05, (3, 3, channels[k], channels[k + 1])).astype(np.float32)
            bias = rng.normal(0, 0.1, channels[k + 1]).astype(np.float32)
            group = root.create_group(name)
            names = [f"{name}/kernel:0", f"{name}/bias:0"] if nested else [f"{name}_W_1:0", f"{name}_b_1:0"]
            group.attrs["weight_names"] = [n.encode() for n in names]
            group[names[0]], group[names[1]] = kernel, bias
            weights[name] = (kernel, bias)
    return weights


@pytest.mark.parametrize("nested", [False, True], ids=["keras2", "tf_keras"])
def test_keras_h5_to_torch_round_trip(tmp_path, nested):
    rng = np.random.default_rng(0)
    keras = _write_keras_h5(tmp_path / "notop.h5", rng, nested)
    state = keras_h5_to_torch(tmp_path / "notop.h5")
    vgg16_features().load_state_dict(state)  # strict: every conv present, every shape right
    for index, name in list(zip(CONV_INDICES, KERAS_CONV_NAMES))[1:]:
        kernel, bias = keras[name]
        np.testing.assert_array_equal(state[f"{index}.weight"].numpy().transpose(2, 3, 1, 0), kernel)  # OIHW → HWIO
        np.testing.assert_array_equal(state[f"{index}.bias"].numpy(), bias)

    # The first layer computes what Keras computed: Keras on Caffe-preprocessed BGR (0..255 minus the
    # channel means) against torch on ImageNet-normalised RGB (valid convolution: no padding effects).
    rgb = torch.rand(1, 3, 12, 12, dtype=torch.float64)
    caffe = rgb.flip(1) * 255 - torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float64).view(1, 3, 1, 1)
    kernel, bias = keras[KERAS_CONV_NAMES[0]]
    expected = F.conv2d(caffe, torch.from_numpy(kernel.transpose(3, 2, 0, 1)).double(), torch.from_numpy(bias).double())
    normalised = (rgb - torch.tensor(IMAGENET_MEAN, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD, dtype=torch.float64
    ).view(1, 3, 1, 1)
    converted = F.conv2d(normalised, state["0.weight"].double(), state["0.bias"].double())
    torch.testing.assert_close(converted, expected, rtol=1e-4, atol=1e-3)


def test_weights_file_errors_and_torchvision_pth(tmp_path):
    with pytest.raises(UserError, match="vgg16-397923af.pth"):
        load_vgg16_features(tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(UserError, match="not a torchvision VGG16"):
        load_vgg16_features(tmp_path / "other.pth")
    features = vgg16_features()
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16.pth")
    model = FaceClassifier(backbone="vgg16", weights=str(tmp_path / "vgg16.pth"), image_size=32, class_names=["a", "b"])
    torch.testing.assert_close(model.backbone.features[28].weight, features[28].weight)


def test_feature_cache_hits_misses_and_keys(tmp_path):
    files = []
    for k in range(3):
        files.append(tmp_path / f"{k}.bin")
        files[-1].write_bytes(bytes([k]) * 10)
    calls = []

    def compute(batch, keys):
        calls.append([f.name for f in batch])
        return ["no face found" if f.name == "2.bin" else np.full((2, 4), float(f.read_bytes()[0])) for f in batch]

    cache = FeatureCache(tmp_path / "cache")
    first = cache.get(files, "tag-a", compute)
    assert (cache.hits, cache.misses) == (0, 3) and calls == [["0.bin", "1.bin", "2.bin"]]
    assert first[1].shape == (2, 4) and first[1][0, 0] == 1.0 and first[2] == "no face found"
    again = FeatureCache(tmp_path / "cache").get(files, "tag-a", compute)  # a new process: only the disk
    assert len(calls) == 1 and np.array_equal(again[1], first[1]) and again[2] == "no face found"
    cache.get(files, "tag-b", compute)  # another transform or backbone
    assert cache.misses == 6
    files[0].write_bytes(b"changed")  # new content: only that file is recomputed
    cache.get(files, "tag-a", compute)
    assert calls[-1] == ["0.bin"] and cache.hits == 2


def test_view_sampler_rotates_cached_views_per_epoch():
    from faces.data import ViewSampler

    sampler = ViewSampler(items=4, views=3, seed=0)
    seen = []
    for epoch in range(4):
        sampler.set_epoch(epoch)
        seen.append(sorted(sampler))
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [0, 1, 2, 3]]  # epoch e: view e mod 3 of every item


def _identity_folder(root, counts: dict[str, int], corrupt: str | None = None):
    rng = np.random.default_rng(0)
    for name, n in counts.items():
        (root / name).mkdir(parents=True)
        for k in range(n):
            cv2.imwrite(str(root / name / f"{k + 1:04d}.jpg"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    if corrupt:
        (root / corrupt / "9999.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return root


def test_datamodule_bad_input(tmp_path):
    root = _identity_folder(tmp_path / "few", {"alice": 12, "bob": 3, "carol": 2})
    with pytest.raises(UserError, match=r"bob \(3\), carol \(2\)"):
        FaceIdentityDataModule(str(root), min_images=5).setup()
    root = _identity_folder(tmp_path / "one", {"alice": 12})
    with pytest.raises(UserError, match="at least two people"):
        FaceIdentityDataModule(str(root), min_images=5).setup()


def test_datamodule_split_and_corrupt_images(tmp_path):
    root = _identity_folder(tmp_path / "ids", {"alice": 12, "bob": 12, "carol": 12}, corrupt="bob")
    make = lambda: FaceIdentityDataModule(str(root), image_size=32, min_images=5, batch_size=8, seed=3)  # noqa: E731
    a, b = make(), make()
    a.setup(), b.setup()
    assert a.class_names == ["alice", "bob", "carol"]
    assert a.val_files == b.val_files and set(a.val_labels) == {0, 1, 2}  # seeded and stratified
    assert not set(a.val_files) & set(a.train_files)
    images, labels, index = next(iter(a.train_dataloader()))
    a.val_dataloader()
    assert images.dtype == torch.uint8 and images.shape[1:] == (3, 32, 32)
    assert [p.endswith("9999.jpg") for p in a.skipped["unreadable"]] == [True]
    assert len(a.train_dataloader().dataset) + len(a.val_dataloader().dataset) == 36  # 37 files, one unreadable


def test_test_split_is_fixed_per_identity_by_file_name_and_disjoint(tmp_path):
    import hashlib

    root = _identity_folder(tmp_path / "ids", {"alice": 12, "bob": 10, "carol": 11})

    def split(**options):
        data = FaceIdentityDataModule(str(root), image_size=32, min_images=5, test_fraction=0.2, **options)
        data.setup()
        return data

    def names(files):
        return {Path(f).relative_to(root).as_posix() for f in files}

    a = split(seed=3)
    test, val, train = names(a.test_files), names(a.val_files), names(a.train_files)
    assert not test & val and not test & train and not val & train and len(test | val | train) == 33
    # round(0.2 × 12, 0.2 × 10, 0.2 × 11) = 2 of each identity: the files with the lowest SHA-1 of their path
    assert sorted(a.test_labels.tolist()) == [0, 0, 1, 1, 2, 2]
    for person in ("alice", "bob", "carol"):
        mine = sorted(names(root.glob(f"{person}/*.jpg")), key=lambda n: hashlib.sha1(n.encode()).hexdigest())
        assert {n for n in test if n.startswith(f"{person}/")} == set(mine[:2])
    # neither the seed, the validation share nor a cap on the images moves a photo into or out of the test split
    capped = split(seed=3, max_images=15)
    assert len(capped.val_files) == 6  # 0.25 of the 21 images in use (15 + 6 test), rounded up
    for other in (split(seed=4), split(seed=3, val_fraction=0.4), capped):
        assert names(other.test_files) == test
    assert names(split(seed=4).val_files) != val
    assert len(a.val_files) == 9  # val_fraction 0.25 is of all 33 images, rounded up
    assert len(capped.train_files) + len(capped.val_files) == 15
    with pytest.raises(UserError, match="val_fraction"):
        FaceIdentityDataModule(str(root), val_fraction=0.5, test_fraction=0.5)


def test_data_path_runs_one_way_and_features_are_computed_once(tmp_path):
    """The datamodule owns the frozen extractor and serves its cached features; the model, built from the
    same spec, trains its head on them without configuring the datamodule (which has no `use_features`)."""
    import pytorch_lightning as pl

    root = _identity_folder(tmp_path / "ids", {"alice": 8, "bob": 8})

    def fit(serves: str = "features", **model_options) -> FaceIdentityDataModule:
        data = FaceIdentityDataModule(
            str(root),
            image_size=32,
            min_images=5,
            batch_size=4,
            views=2,
            augment={"hflip": 0.5},
            cache_dir=str(tmp_path / "cache"),
            seed=0,
            serves=serves,
            features={"backbone": "vgg16"},
        )
        model = FaceClassifier(backbone="vgg16", image_size=32, hidden=(8, 8, 8), inputs="features", **model_options)
        pl.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(tmp_path),
        ).fit(model, datamodule=data)
        assert model.backbone.tag() == data.extractor.tag  # the checkpoint's backbone is the one the head learned from
        return data

    data = fit()
    assert not hasattr(data, "use_features")
    assert (data.feature_cache.hits, data.feature_cache.misses) == (0, 16)  # each file once, for both epochs
    features, labels, _ = next(iter(data.train_dataloader()))
    assert features.dtype == torch.float32 and features.shape == (4, 512) and labels.shape == (4,)
    again = fit()
    assert (again.feature_cache.hits, again.feature_cache.misses) == (16, 0)  # a new run reads the cache only
    with pytest.raises(UserError, match="but the model's backbone is vgg16\\|imagenet\\|flatten"):
        fit(pool="flatten")  # features of another backbone than the model's
    with pytest.raises(UserError, match="the data serves images but model.inputs=features"):
        fit(serves="images")


def test_train_entry_two_steps_logs_to_mlflow(tmp_path, store):
    from experiments.train import train

    store = {**store, "paths.cache_dir": str(tmp_path / "cache")}  # its own cache: the count below is exact
    overrides = {
        "experiment": "vgg16_faces",
        "debug": "fast",
        "model.backbone": "vgg16",  # the paper's backbone (random weights here): its two-step accuracy is pinned below
        "data.image_size": 32,
        "data.views": 2,
        **store,
    }
    value = train(compose("train", overrides))
    # two steps from a random head: it predicts one identity (carol) for all 48 validation faces, 12 per identity
    assert value == 0.25
    client, runs = mlflow_runs(tmp_path, "vgg16_faces")
    metrics = runs[0].data.metrics
    for key in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val_class/0_alice/precision",
        "val_class/3_dave/recall",
    ):
        assert key in metrics, key
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)} | {
        a.path for d in ("figures", "checkpoints") for a in client.list_artifacts(runs[0].info.run_id, d)
    }
    assert {"label_map.json", "per_class.json", "figures/confusion_matrix.png", "checkpoints/last.ckpt"} <= artifacts
    assert (metrics["val_class/2_carol/recall"], metrics["val_class/0_alice/recall"]) == (1.0, 0.0)
    assert "figures/misclassified.png" in artifacts and "misclassified.txt" not in artifacts  # 36 of 48 are wrong

    # the test split, once after training with best.ckpt: 16 photos of each identity (test_fraction 0.2 of 80), out of
    # debug's 128-image cap; the head names carol for all of them too: 16 of 64, with Wilson's interval (closed form)
    assert metrics["test/images"] == 64 and metrics["test/acc"] == 0.25
    z, n, p = 1.959963984540054, 64, 0.25
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert metrics["test/acc_low"] == pytest.approx(centre - half) and metrics["test/acc_high"] == pytest.approx(
        centre + half
    )
    assert runs[0].data.tags["test.checkpoint"] == "best.ckpt"
    contexts = {
        tag.value: dataset_input.dataset.digest
        for dataset_input in runs[0].inputs.dataset_inputs
        for tag in dataset_input.tags
        if tag.key == "mlflow.data.context"
    }
    assert set(contexts) == {"training", "validation", "test"}

    cached = sorted(Path(store["paths.cache_dir"], "features").rglob("*.npz"))
    stamps = [p.stat().st_mtime_ns for p in cached]
    assert len(cached) == 192  # 80 train files (2 views each) + 48 val + 64 test files, one entry per file
    train(compose("train", overrides))  # the second run reads every feature from the cache
    assert [p.stat().st_mtime_ns for p in sorted(Path(store["paths.cache_dir"], "features").rglob("*.npz"))] == stamps

    from faces.classifier import export_onnx  # the page's recognise pane runs this file

    exported = export_onnx(next(Path(store["paths.log_dir"]).rglob("last.ckpt")), tmp_path / "faces.onnx")
    assert exported["class_names"] == ["alice", "bob", "carol", "dave"] and exported["image_size"] == 32
    assert exported["parity"]["max_abs_difference"] < 1e-3
