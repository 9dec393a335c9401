"""Running PostgreSQL as a dedicated system user when we are root (PostgreSQL refuses root).

As root, the embedded PostgreSQL runs as the system user `exchange-pg` (created with
`useradd --system --no-create-home --shell /usr/sbin/nologin` if missing). Only the
`<data_dir>/postgres` folder is chowned to it; no other folder is chmod-ed or opened up.
If that user cannot traverse a parent folder of the data dir (e.g. `/root`, mode 700),
or cannot read and run the PostgreSQL binaries in the venv, `check_access` raises a
`ServiceError` naming the folder and the fix; it never changes permissions itself.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from infra.services.errors import ServiceError

SYSTEM_USER = "exchange-pg"

# Prints the first "mode:path" the current user fails `test -mode` on, and exits 1.
_CHECK_SCRIPT = 'for spec do test -"${spec%%:*}" "${spec#*:}" || { printf %s "$spec"; exit 1; }; done'


@dataclass(frozen=True)
class RunAs:
    """A system user to run server processes as."""

    name: str
    uid: int
    gid: int

    def chown(self, path: Path) -> None:
        """Give `path` (not its parents) to this user."""
        os.chown(path, self.uid, self.gid)

    def chown_tree(self, path: Path) -> None:
        """Give `path` and everything below it to this user (skipped if it already owns the top)."""
        if path.stat().st_uid == self.uid:
            return
        self.chown(path)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), self.uid, self.gid, follow_symlinks=False)


def run_as_for_postgres(name: str = SYSTEM_USER) -> RunAs | None:
    """The user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    return ensure_system_user(name)


def ensure_system_user(name: str) -> RunAs:
    """The system user `name`, created (no home, no login shell) if missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        entry = _create_system_user(name)
    return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def _create_system_user(name: str) -> pwd.struct_passwd:
    """`useradd --system` (concurrent creation by another process is fine)."""
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    shell = next((s for s in ("/usr/sbin/nologin", "/sbin/nologin") if Path(s).exists()), "/bin/false")
    args = [useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
            "--shell", shell, "--user-group", name]  # fmt: skip
    try:
        proc = subprocess.run(args, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ServiceError(f"cannot create system user {name!r} for PostgreSQL: {exc}") from exc
    if proc.returncode != 0 and not _user_exists(name):
        raise ServiceError(
            f"cannot create system user {name!r} for PostgreSQL: {proc.stderr.strip() or proc.returncode}"
        )
    return pwd.getpwnam(name)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class UserKwargs(TypedDict, total=False):
    """The `subprocess` keyword arguments that choose the user of the child."""

    user: int
    group: int
    extra_groups: list[int]


def subprocess_user_kwargs(run_as: RunAs | None) -> UserKwargs:
    """Keyword arguments for `subprocess` that drop to `run_as` (no supplementary groups)."""
    if run_as is None:
        return {}
    return {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


def check_access(run_as: RunAs, data_root: Path, pginstall: Path, libs: Path) -> None:
    """Raise a clear `ServiceError` unless `run_as` can reach `data_root` and run the binaries."""
    _check_folders(run_as, data_root)
    specs = [f"x:{pginstall / 'bin' / exe}" for exe in ("postgres", "initdb", "pg_ctl")]
    specs += [f"r:{pginstall / sub}" for sub in ("lib", "share")]
    specs += [f"x:{pginstall / sub}" for sub in ("lib", "share")]
    if libs.is_dir():
        specs += [f"x:{libs}", *(f"r:{lib}" for lib in sorted(libs.iterdir()))]
    failed = _first_failure(run_as, specs)
    if failed is not None:
        raise ServiceError(
            f"the PostgreSQL files in the venv are not readable/executable by system user "
            f"{run_as.name!r} ({failed}). PostgreSQL cannot run as root, so it runs as that user. "
            f"Fix: chmod -R o+rX {pginstall} {libs} (or recreate the venv with umask 022)."
        )


def _check_folders(run_as: RunAs, data_root: Path) -> None:
    """Every existing parent folder of `data_root` must be enterable by `run_as`."""
    parents = [p for p in reversed(data_root.parents) if p.exists()]
    failed = _first_failure(run_as, [f"x:{p}" for p in parents])
    if failed is None:
        return
    folder = Path(failed.split(":", 1)[1])
    mode = stat.filemode(folder.stat().st_mode)
    owner = _owner(folder)
    raise ServiceError(
        f"PostgreSQL refuses to run as root, so the embedded one runs as system user {run_as.name!r}, "
        f"which cannot enter {folder} ({mode}, owner {owner}) on the way to {data_root}. "
        f"Set EXCHANGE_DATA_DIR to a folder outside it (e.g. /var/lib/exchange or /srv/exchange), "
        f"or let only that user through: setfacl -m u:{run_as.name}:x {folder}. "
        f"(Permissions of other folders are never changed automatically.)"
    )


def _first_failure(run_as: RunAs, specs: list[str]) -> str | None:
    """The first `mode:path` spec that `run_as` fails `test -mode path` on, else None."""
    if not specs:
        return None
    proc = subprocess.run(
        ["/bin/sh", "-c", _CHECK_SCRIPT, "sh", *specs],
        capture_output=True,
        text=True,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        check=False,
        **subprocess_user_kwargs(run_as),
    )
    if proc.returncode == 0:
        return None
    return proc.stdout.strip() or f"check failed: {proc.stderr.strip()}"


def _owner(path: Path) -> str:
    st = path.stat()
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"
