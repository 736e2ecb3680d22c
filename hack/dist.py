#!/usr/bin/env python3
"""Builds what a platform team installs: the sdist and wheel (`python -m build`), and the
operator/router image as an OCI image layout, without a container engine.

The image is the Dockerfile's, assembled by other means: a Debian bookworm root filesystem made
by `debootstrap --variant=minbase` with Debian's python3 (the base layer), a virtualenv in
/opt/quantrollout holding the wheel and its dependencies, installed by pip inside a chroot of
that root filesystem (the app layer), and a config that runs `quantrollout` as uid 65532. The
layers are tar files with fixed owners, order and times, so the same inputs give the same
digests; `hack/ocitool` (go-containerregistry) writes the layout and validates it.

Everything slow is cached under $QR_CACHE/image (default ~/.cache/quantrollout/image): the base
layer by its package list, the wheelhouse by the wheel's dependencies and hack/constraints.txt,
the layout by the digests of its inputs. A second run with the same sources builds nothing.

usage: hack/dist.py dist [--outdir DIR]         the sdist and wheel
       hack/dist.py image [--outdir DIR]        dist, then the image; prints its layout, tag, sizes
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(
    os.environ.get("QR_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "quantrollout"
)
REPOSITORY = "ghcr.io/quantrollout/quantrollout"  # the chart's image.repository
SUITE = "bookworm"  # Debian 12: python3 is 3.11, as the wheel requires (>= 3.11)
# What the image's base holds beyond minbase: Python, and CA certificates for an https Prometheus.
BASE_PACKAGES = ("python3", "ca-certificates")
USER = "65532:65532"  # "nonroot", as distroless images call it
VENV = "/opt/quantrollout"
ENTRYPOINT = f"{VENV}/bin/quantrollout"
WHEEL_EPOCH = 315532800  # 1980-01-01, the earliest time a zip file can hold
EPOCH = 0  # every file's mtime in the layers, and the image's creation time: digests are stable
# Left out of the base layer: documentation, manuals, translations and apt's downloaded lists.
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
         "var/cache/apt", "var/lib/apt/lists", "var/log")  # fmt: skip


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Image:
    layout: Path
    tag: str  # the org.opencontainers.image.ref.name in the layout's index
    reference: str  # REPOSITORY:tag, what the chart runs by default
    layers: tuple[Path, ...]
    built: bool  # False when the cache already held it


def version() -> str:
    """The package's version, read the way setuptools reads it (pyproject: attr __version__)."""
    text = (REPO / "operator" / "quantrollout" / "__init__.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise SystemExit("no __version__ in operator/quantrollout/__init__.py")


def build_dist(outdir: Path) -> Dist:
    """`python -m build`: the sdist, then the wheel built from that sdist (as PyPI's users get it)."""
    outdir.mkdir(parents=True, exist_ok=True)
    for old in [*outdir.glob("quantrollout-*.tar.gz"), *outdir.glob("quantrollout-*.whl")]:
        old.unlink()
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(REPO)],
        capture_output=True,
        text=True,
        # Fixed times in the wheel's zip, so the same sources give the same wheel (and image).
        # PIP_CONSTRAINT: the isolated build environment's setuptools and wheel are pinned too.
        env={
            **os.environ,
            "SOURCE_DATE_EPOCH": str(WHEEL_EPOCH),
            "PIP_CONSTRAINT": str(REPO / "hack" / "constraints.txt"),
        },
    )
    if built.returncode:
        sys.stderr.write(built.stdout + built.stderr)
        raise SystemExit(f"python -m build failed ({built.returncode})")
    (sdist,) = outdir.glob("quantrollout-*.tar.gz")
    (wheel,) = outdir.glob("quantrollout-*.whl")
    return Dist(sdist, wheel)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def wheel_content_key(wheel: Path) -> str:
    """The wheel's files and their hashes (its RECORD), not the zip's own bytes, which change with
    the build's timestamps."""
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        return _digest(zf.read(record))


def wheel_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    return [
        line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """One build of a cached thing at a time (make image and the tests may race)."""
    (CACHE / "image").mkdir(parents=True, exist_ok=True)
    with open(CACHE / "image" / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def wheelhouse(wheel: Path) -> Path:
    """Binary wheels of the wheel's dependencies (and pip, to install them inside the chroot), as
    hack/constraints.txt pins them; downloaded once per set of requirements."""
    constraints = (REPO / "hack" / "constraints.txt").read_bytes()
    key = _digest("\n".join(wheel_requirements(wheel)).encode(), constraints, b"cp311")
    house = CACHE / "image" / f"wheelhouse-{key}"
    with _locked("wheelhouse"):
        if (house / ".complete").exists():
            return house
        shutil.rmtree(house, ignore_errors=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--only-binary=:all:", "-c", str(REPO / "hack" / "constraints.txt"),
             "-d", str(house), str(wheel), "pip"],
            check=True,
        )  # fmt: skip
        for own in house.glob("quantrollout-*.whl"):
            own.unlink()
        (house / ".complete").touch()
    return house


def _layer(root: Path, members: list[str], out: Path) -> None:
    """A reproducible gzipped tar of `members` (paths relative to root): sorted, numeric owners
    as they are on disk, every mtime EPOCH, no gzip timestamp."""
    tmp = out.with_suffix(".partial")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in members:
            _add_tree(tar, root, member)
    tmp.rename(out)


def _add_tree(tar: tarfile.TarFile, root: Path, rel: str) -> None:
    path = root / rel
    info = tar.gettarinfo(str(path), arcname=rel)
    if info is None:  # a socket: nothing an image can hold
        return
    info.mtime, info.uname, info.gname = EPOCH, "", ""
    if info.isreg():
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)
    if path.is_dir() and not path.is_symlink():
        for child in sorted(os.listdir(path)):
            _add_tree(tar, root, f"{rel}/{child}" if rel != "." else child)


def base_layer() -> tuple[Path, Path]:
    """debootstrap's minbase of SUITE with BASE_PACKAGES and the nonroot user: the root
    filesystem (kept, to install the app into) and its layer, built once per package list."""
    key = _digest(
        SUITE.encode(), " ".join(BASE_PACKAGES).encode(), " ".join(PRUNE).encode(), USER.encode()
    )
    where = CACHE / "image" / f"base-{SUITE}-{key}"
    rootfs, layer = where / "rootfs", where / "layer.tar.gz"
    with _locked("base"):
        if layer.exists():
            return rootfs, layer
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
        print(f"building the base root filesystem (debootstrap {SUITE}), once...", file=sys.stderr)
        subprocess.run(
            [debootstrap, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
             SUITE, str(rootfs), _mirror()],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        uid, gid = USER.split(":")
        with open(rootfs / "etc" / "passwd", "a") as f:
            f.write(f"nonroot:x:{uid}:{gid}:nonroot:/home/nonroot:/usr/sbin/nologin\n")
        with open(rootfs / "etc" / "group", "a") as f:
            f.write(f"nonroot:x:{gid}:\n")
        (rootfs / "home" / "nonroot").mkdir(parents=True)
        os.chown(rootfs / "home" / "nonroot", int(uid), int(gid))
        for rel in PRUNE:
            shutil.rmtree(rootfs / rel, ignore_errors=True)
            (rootfs / rel).mkdir(parents=True)
        packages = subprocess.run(
            ["chroot", str(rootfs), "dpkg-query", "-W", "-f", "${Package}=${Version}\n"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        (where / "packages.txt").write_text(packages)
        _layer(rootfs, sorted(os.listdir(rootfs)), layer)
    return rootfs, layer


def _mirror() -> str:
    """The Debian mirror apt is configured with here (deb822 or one-line sources)."""
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.exists():
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    listed = Path("/etc/apt/sources.list")
    if listed.exists():
        for line in listed.read_text().splitlines():
            parts = line.split()
            if parts[:1] == ["deb"] and "security" not in line:
                return next(p for p in parts[1:] if "://" in p)
    return "http://deb.debian.org/debian"


def app_layer(rootfs: Path, wheel: Path, house: Path, out: Path) -> None:
    """A virtualenv at VENV with the wheel and its dependencies, made by the image's own Python
    inside a chroot of the base (so its scripts and compiled files are the image's), then taken
    out of the base again."""
    venv = rootfs / VENV.lstrip("/")
    staging = rootfs / "tmp" / "qr-build"
    shutil.rmtree(venv, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(house, staging / "wheels")
    shutil.copy(wheel, staging / "wheels")
    pip = next((staging / "wheels").glob("pip-*.whl"))
    try:
        chroot = ["chroot", str(rootfs)]
        # SOURCE_DATE_EPOCH: pip's compiled files are hash-based, not stamped with install times.
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               "SOURCE_DATE_EPOCH": str(EPOCH)}  # fmt: skip
        subprocess.run(
            [*chroot, "/usr/bin/python3", "-m", "venv", "--without-pip", VENV], check=True, env=env
        )
        subprocess.run(
            [*chroot, f"{VENV}/bin/python", f"/tmp/qr-build/wheels/{pip.name}/pip", "install",
             "-q", "--no-index", "--no-cache-dir", "--disable-pip-version-check",
             "--find-links", "/tmp/qr-build/wheels", f"/tmp/qr-build/wheels/{wheel.name}"],
            check=True, env=env,
        )  # fmt: skip
        for cache in venv.rglob("__pycache__"):
            if not any(cache.iterdir()):
                cache.rmdir()
        _layer(rootfs, [VENV.lstrip("/")], out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(venv, ignore_errors=True)


def ocitool() -> Path:
    found = subprocess.run(
        [str(REPO / "hack" / "tools.sh"), "ocitool"], check=True, capture_output=True, text=True
    ).stdout
    return Path(found.strip().split("=", 1)[1])


def build_image(wheel: Path) -> Image:
    tag = version()
    house = wheelhouse(wheel)
    rootfs, base = base_layer()
    key = _digest(_file_sha256(base).encode(), wheel_content_key(wheel).encode(),
                  house.name.encode(), Path(__file__).read_bytes())  # fmt: skip
    where = CACHE / "image" / f"quantrollout-{tag}-{key}"
    layout, app = where / "layout", where / "app.tar.gz"
    with _locked("app"):
        if (where / ".complete").exists():
            return Image(layout, tag, f"{REPOSITORY}:{tag}", (base, app), built=False)
        shutil.rmtree(where, ignore_errors=True)
        where.mkdir(parents=True)
        app_layer(rootfs, wheel, house, app)
        labels = {
            "org.opencontainers.image.title": "quantrollout",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.licenses": "Apache-2.0",
            "org.opencontainers.image.base.name": f"debian:{SUITE} (debootstrap minbase)",
        }
        subprocess.run(
            [str(ocitool()), "build", "-layout", str(layout), "-ref", tag,
             "-layer", str(base), "-layer", str(app), "-user", USER, "-entrypoint", ENTRYPOINT,
             "-env", f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "-env", "PYTHONUNBUFFERED=1",
             *(a for k, v in labels.items() for a in ("-label", f"{k}={v}"))],
            check=True,
        )  # fmt: skip
        (where / ".complete").touch()
    return Image(layout, tag, f"{REPOSITORY}:{tag}", (base, app), built=True)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _size(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else path.stat().st_size
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("what", choices=["dist", "image"])
    parser.add_argument("--outdir", type=Path, default=REPO / "dist")
    opts = parser.parse_args()
    started = time.monotonic()
    dist = build_dist(opts.outdir)
    print(f"sdist  {dist.sdist}  {_size(dist.sdist) / 1e6:.2f} MB")
    print(
        f"wheel  {dist.wheel}  {_size(dist.wheel) / 1e6:.2f} MB  ({time.monotonic() - started:.0f}s)"
    )
    if opts.what == "image":
        image = build_image(dist.wheel)
        index = json.loads((image.layout / "index.json").read_text())
        digest = index["manifests"][0]["digest"]
        print(f"image  {image.reference}  {digest}")
        print(f"layout {image.layout}  {_size(image.layout) / 1e6:.1f} MB"
              + ("" if image.built else "  (cached)"))  # fmt: skip
        for layer in image.layers:
            print(f"  layer {layer.parent.name}/{layer.name}  {_size(layer) / 1e6:.1f} MB gzipped")
        print(f"built in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
