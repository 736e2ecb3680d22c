"""What a platform team installs, built as they would get it and run as they would run it:

- `python -m build` makes an sdist (README, LICENSE, sources) and a wheel; the wheel installs into
  a fresh virtualenv (its dependencies from the pinned wheelhouse, no index) and both commands run;
- the image (hack/dist.py: Debian root filesystem + the wheel, no container engine) is an OCI
  layout that go-containerregistry's validator accepts and that this test reads again by itself,
  digest by digest; unpacked and run under chroot as its configured non-root user, its entrypoint
  prints the package's version; the chart's default image is that build's tag.

The image build needs root (debootstrap, chroot), as CI has; the first build takes minutes and
is cached under ~/.cache/quantrollout/image, so later runs only read it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import dist as qrdist
from localstack.controlplane import tool_path
from quantrollout import __version__

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "quantrollout"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> qrdist.Dist:
    return qrdist.build_dist(tmp_path_factory.mktemp("dist"))


def test_the_sdist_carries_the_readme_license_and_sources(built: qrdist.Dist) -> None:
    with tarfile.open(built.sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
        info = tar.extractfile(f"quantrollout-{__version__}/PKG-INFO")
        assert info is not None
        pkg_info = info.read().decode()
    assert {"README.md", "LICENSE", "pyproject.toml", "operator/quantrollout/__init__.py"} <= names
    assert f"Version: {__version__}\n" in pkg_info
    assert "License-Expression: Apache-2.0" in pkg_info
    assert built.sdist.name == f"quantrollout-{__version__}.tar.gz"


def test_the_wheel_holds_the_package_and_both_commands(built: qrdist.Dist) -> None:
    with zipfile.ZipFile(built.wheel) as zf:
        names = set(zf.namelist())
        entry_points = zf.read(f"quantrollout-{__version__}.dist-info/entry_points.txt").decode()
    assert "quantrollout/router/http1.py" in names
    assert f"quantrollout-{__version__}.dist-info/licenses/LICENSE" in names
    assert "quantrollout = quantrollout.cli.main:main" in entry_points
    assert "kubectl-quantrollout = quantrollout.cli.plugin:main" in entry_points


def test_the_wheel_installs_into_a_fresh_venv_and_runs(built: qrdist.Dist, tmp_path: Path) -> None:
    house = qrdist.wheelhouse(built.wheel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-index", "--find-links", str(house), str(built.wheel)],
        check=True,
    )  # fmt: skip
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path)}  # nothing of .venv
    version = run([venv / "bin" / "quantrollout", "--version"], env)
    assert version.strip() == f"quantrollout {__version__}"
    plugin = run([venv / "bin" / "kubectl-quantrollout", "--help"], env)
    for command in ("get", "promote", "abort", "retry", "pause", "resume"):
        assert command in plugin
    assert "--port" in run([venv / "bin" / "quantrollout", "router", "--help"], env)
    where = run(
        [venv / "bin" / "python", "-c", "import quantrollout; print(quantrollout.__file__)"], env
    )
    assert where.startswith(str(venv)), where  # the wheel's copy, not the work tree's


def run(argv: list[Any], env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# --- the image -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(built: qrdist.Dist) -> qrdist.Image:
    if os.geteuid() != 0 and not os.environ.get("QR_REQUIRE_TOOLS"):
        pytest.skip("building the image needs root (debootstrap, chroot)")
    return qrdist.build_image(built.wheel)


def blob(layout: Path, digest: str) -> Path:
    algorithm, hexdigest = digest.split(":")
    return layout / "blobs" / algorithm / hexdigest


def read_checked(layout: Path, descriptor: dict[str, Any]) -> bytes:
    """A blob, after checking it is the size and sha256 its descriptor says."""
    data = blob(layout, descriptor["digest"]).read_bytes()
    assert len(data) == descriptor["size"], descriptor
    assert "sha256:" + hashlib.sha256(data).hexdigest() == descriptor["digest"], descriptor
    return data


def manifest_and_config(image: qrdist.Image) -> tuple[dict[str, Any], dict[str, Any]]:
    layout = image.layout
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    (entry,) = [m for m in index["manifests"] if m["annotations"].get(
        "org.opencontainers.image.ref.name") == image.tag]  # fmt: skip
    assert entry["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    manifest = json.loads(read_checked(layout, entry))
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads(read_checked(layout, manifest["config"]))
    return manifest, config


def test_the_layout_validates(image: qrdist.Image) -> None:
    checked = subprocess.run(
        [str(qrdist.ocitool()), "validate", "-layout", str(image.layout)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split()[0] == image.tag
    manifest, config = manifest_and_config(image)  # read again here, every digest checked
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == 2
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
        with blob(image.layout, layer["digest"]).open("rb") as f:
            assert "sha256:" + hashlib.sha256(gzip.decompress(f.read())).hexdigest() == diff_id
        read_checked(image.layout, layer)
    assert (config["os"], config["architecture"]) == ("linux", "amd64")


@pytest.fixture(scope="module")
def unpacked(image: qrdist.Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The image's layers unpacked in order, as a container runtime lays out its root."""
    manifest, _ = manifest_and_config(image)
    root = tmp_path_factory.mktemp("image-root")
    root.chmod(0o755)  # a runtime's root directory; mktemp's 0700 would lock the user out
    for layer in manifest["layers"]:
        with tarfile.open(blob(image.layout, layer["digest"])) as tar:
            tar.extractall(root, filter="tar" if os.geteuid() else "fully_trusted")
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


def test_the_entrypoint_runs_as_non_root_and_prints_the_version(
    image: qrdist.Image, unpacked: Path
) -> None:
    _, config = manifest_and_config(image)
    user = config["config"]["User"]
    uid, gid = (int(part) for part in user.split(":"))
    assert uid != 0, user
    assert gid != 0, user
    entrypoint = config["config"]["Entrypoint"]
    env = dict(item.split("=", 1) for item in config["config"]["Env"])
    chroot = ["chroot", f"--userspec={uid}:{gid}", str(unpacked)]
    version = run([*chroot, *entrypoint, "--version"], env)
    assert version.strip() == f"quantrollout {__version__}"
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == __version__
    who = run(
        [
            *chroot,
            "/opt/quantrollout/bin/python",
            "-c",
            "import os; print(os.getuid(), os.getgid())",
        ],
        env,
    )
    assert who.split() == [str(uid), str(gid)]
    plugin = run([*chroot, "/opt/quantrollout/bin/kubectl-quantrollout", "--help"], env)
    assert "promote" in plugin
    # The Python the image runs is Debian's, not the machine's: the wheel's native dependencies
    # (pydantic-core, uvloop, httptools) load in it.
    imports = (
        "import pydantic_core, uvloop, httptools, sys; print(sys.executable, sys.version_info[:2])"
    )
    python = run([*chroot, "/opt/quantrollout/bin/python", "-c", imports], env)
    assert python.split()[0] == "/opt/quantrollout/bin/python"


def test_the_chart_runs_the_image_this_build_tags(image: qrdist.Image, unpacked: Path) -> None:
    """The chart's default image is this build, and each of its containers' arguments parse in
    it, as the chart's pod user: the chart sets args only, so the image's entrypoint runs them."""
    helm = tool_path("helm", "HELM")
    rendered = subprocess.run(
        [helm, "template", "qr", str(CHART), "--namespace", "quantrollout-system",
         "--kube-version", "1.33.13"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    pods = [
        doc["spec"]["template"]["spec"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "Deployment"
    ]
    containers = [c for pod in pods for c in pod["containers"]]
    assert {c["image"] for c in containers} == {image.reference}
    assert image.reference == f"{qrdist.REPOSITORY}:{__version__}"
    _, config = manifest_and_config(image)
    env = dict(item.split("=", 1) for item in config["config"]["Env"])
    for pod, container in ((p, c) for p in pods for c in p["containers"]):
        assert "command" not in container, container["name"]
        user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
        chroot = ["chroot", f"--userspec={user}", str(unpacked)]
        # --help last: every argument before it is parsed (names, choices, types), then it exits.
        usage = run([*chroot, *config["config"]["Entrypoint"], *container["args"], "--help"], env)
        assert usage.startswith(f"usage: quantrollout {container['args'][0]}"), usage


def test_the_dockerfile_builds_the_same_image() -> None:
    """No Docker engine here: the Dockerfile is not built, but it must say what the engine-less
    build does (user, entrypoint, Python, where the venv lives)."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    assert f"USER {qrdist.USER}" in lines
    assert f'ENTRYPOINT ["{qrdist.ENTRYPOINT}"]' in lines
    assert any(line.startswith("FROM python:3.11-slim-bookworm") for line in lines)
    assert any(
        f"python3 -m venv {qrdist.VENV}" in line or f"-m venv {qrdist.VENV}" in line
        for line in lines
    )
