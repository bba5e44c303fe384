"""The credential inventory where it meets a process or the database: `herald credentials import` refuses what is not a
regular file, and the sweep rereads a source with the same checks (the reading itself: tests/unit)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from herald import inventory
from tests.builders import SECRET, make_cert, pem


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "folder-link"])
def test_cli_import_refuses_what_is_not_a_regular_file_with_exit_2(tmp_path: Path, target: str) -> None:
    import subprocess
    import sys

    from tests.integration.conftest import ROOT

    path = Path(target)
    if target == "fifo":
        path = tmp_path / "keys.yaml"
        os.mkfifo(path)
    elif target == "folder-link":
        path = tmp_path / "link.yaml"
        path.symlink_to("/dev/zero")
    done = subprocess.run([sys.executable, "-m", "cli", "credentials", "import", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"herald: {path}: not a regular file or a folder: not read"]


def test_the_sweep_rereads_a_source_with_the_same_checks(clean: None, tmp_path: Path) -> None:
    from herald import db
    from schedules.expiry import sweep_credentials

    # given a folder imported while it held one good certificate
    folder = tmp_path / "pki"
    folder.mkdir()
    (folder / "erp.pem").write_bytes(pem(make_cert("erp", 200)[0]))
    (tmp_path / "shadow").write_bytes(SECRET)
    with db.session() as s:
        inventory.rescan_source(s, inventory.add_source(s, folder, environment="prod", owner="team:security"))
    # when the certificate is swapped for a link out of the folder and a 2 MB file appears, and the sweep runs
    (folder / "erp.pem").unlink()
    (folder / "erp.pem").symlink_to(tmp_path / "shadow")
    with (folder / "big.crt").open("wb") as f:
        f.truncate(2 * inventory.MAX_FILE_BYTES)
    assert sweep_credentials() is not None
    # then neither is read: both are reported with a reason that holds nothing of them
    with db.session() as s:
        errors = {r["name"]: r["error"] for r in inventory.list_credentials(s)}
    assert errors == {"erp": f"resolves outside {folder} (a symlink?): not read",
                      "big": "is 2 MB, larger than the limit of 1 MB"}
