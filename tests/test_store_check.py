"""A training pointed at a local MLflow store it cannot use stops at once with one line naming the store and what
helps, and leaves the file as it was: a store of an older or a newer MLflow, a damaged one, one another program
holds locked. A store whose writer was killed mid-transaction is rolled back to its last commit and used
(`core.mlflow_store.check_local_store`, called by the training entry before anything is written)."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import sqlite3
import subprocess
import sys
import threading

import mlflow
import pytest
from alembic.script import ScriptDirectory
from mlflow.store.db.utils import _get_alembic_config

from core.errors import UserError
from core.mlflow_store import check_local_store
from experiments.train import train
from tests.conftest import compose


@pytest.fixture(scope="module")
def good_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    client.create_experiment("exp", str(root / "mlruns"))
    return root / "mlflow.db"


def _copy(good, tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    shutil.copyfile(good, folder / "mlflow.db")
    return folder / "mlflow.db"


def _set_revision(database, revision):
    with sqlite3.connect(database) as db:
        db.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def _digest(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_a_good_store_and_a_new_one_pass(good_store, tmp_path):
    check_local_store(f"sqlite:///{good_store}")
    check_local_store(f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}")
    check_local_store("http://127.0.0.1:5001")


def test_a_store_of_an_older_mlflow_says_how_to_upgrade(good_store, tmp_path):
    database = _copy(good_store, tmp_path, "old")
    scripts = ScriptDirectory.from_config(_get_alembic_config(f"sqlite:///{database}"))
    previous = scripts.get_revision(scripts.get_current_head()).down_revision
    _set_revision(database, previous)
    before = _digest(database)
    with pytest.raises(UserError) as error:
        check_local_store(f"sqlite:///{database}")
    message = str(error.value)
    assert f"MLflow store {database} was written by an older MLflow (schema {previous};" in message
    assert f"`mlflow db upgrade sqlite:///{database}`" in message and "paths.mlflow_dir" in message
    assert "\n" not in message and _digest(database) == before


def test_a_store_of_a_newer_mlflow_is_named(good_store, tmp_path):
    database = _copy(good_store, tmp_path, "newer")
    _set_revision(database, "0123456789ab")
    with pytest.raises(UserError, match=r"was written by a newer MLflow \(schema 0123456789ab, unknown to MLflow "):
        check_local_store(f"sqlite:///{database}")


def test_a_damaged_store_is_named(good_store, tmp_path):
    database = _copy(good_store, tmp_path, "cut")
    data = database.read_bytes()
    database.write_bytes(data[: len(data) // 2])
    before = _digest(database)
    with pytest.raises(UserError, match=rf"^MLflow store {database} is damaged or not a database \("):
        check_local_store(f"sqlite:///{database}")
    (tmp_path / "text.db").write_text("not a database\n" * 100)
    with pytest.raises(UserError, match="is damaged or not a database"):
        check_local_store(f"sqlite:///{tmp_path / 'text.db'}")
    assert _digest(database) == before


def test_a_locked_store_is_waited_for_then_named(good_store, tmp_path):
    database = _copy(good_store, tmp_path, "locked")
    holder = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    with pytest.raises(UserError, match=rf"^MLflow store {database} is locked by another program \(waited 1 s\)"):
        check_local_store(f"sqlite:///{database}", wait_s=1.0)
    # released within the wait: the check goes through
    threading.Timer(0.5, lambda: holder.execute("ROLLBACK")).start()
    check_local_store(f"sqlite:///{database}", wait_s=10.0)
    holder.close()


_KILLED_WRITER = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA cache_size = 2")  # pages spill to the file mid-transaction, so the journal is hot
db.execute("BEGIN")
db.execute("CREATE TABLE scratch (x)")
db.executemany("INSERT INTO scratch VALUES (?)", ((i,) for i in range(50_000)))
os._exit(0)  # dies before COMMIT, as a SIGKILLed training does
"""


def test_a_store_whose_writer_was_killed_mid_transaction_is_rolled_back_and_passes(good_store, tmp_path):
    database = _copy(good_store, tmp_path, "killed")
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(database)], check=True)
    journal = database.with_name("mlflow.db-journal")
    assert journal.stat().st_size > 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # what a read-only connection meets
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            db.execute("PRAGMA quick_check").fetchone()
    check_local_store(f"sqlite:///{database}")
    assert not journal.exists()
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'scratch'").fetchall()
    assert mlflow.MlflowClient(f"sqlite:///{database}").get_experiment_by_name("exp") is not None


def test_training_stops_with_the_one_line_before_writing(good_store, tmp_path, data_dir):
    database = _copy(good_store, tmp_path, "newer")
    _set_revision(database, "0123456789ab")
    before = _digest(database)
    cfg = compose(
        "train",
        [
            "experiment=exp1_dcgan_fruits",
            "debug=fast",
            f"paths.mlflow_dir={database.parent}",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={data_dir}",
        ],
    )
    with pytest.raises(UserError, match="was written by a newer MLflow"):
        train(cfg)
    assert _digest(database) == before
    assert not list((tmp_path / "logs").rglob("*.ckpt"))
