"""The review queue opens only batch output folders under batch_root: no `..`, no absolute path, no symlink out."""

from pathlib import Path

from serve.app import review_folders


def batch_output(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "conversations.parquet").write_bytes(b"PAR1")
    return folder


def test_only_folders_really_under_batch_root_are_offered(tmp_path):
    root = tmp_path / "runs"
    inside = batch_output(root / "nightly" / "2026-12-07")
    outside = batch_output(tmp_path / "elsewhere" / "secret-job")
    (root / "link-out").symlink_to(outside.parent, target_is_directory=True)  # a symlinked folder leading outside

    offered = review_folders(root)

    assert offered == [str(inside)]
    assert not any("secret-job" in folder for folder in offered)
    for typed in (str(root / ".." / "elsewhere" / "secret-job"), str(outside), "../elsewhere/secret-job"):
        assert typed not in offered  # the app refuses any folder not in this list
    assert review_folders(tmp_path / "missing") == []
