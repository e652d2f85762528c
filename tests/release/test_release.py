"""Release bundles for real: a registered champion exported, signed, verified, installed offline, served.

The registry is a real sqlite MLflow store, the keys real Ed25519 keys, the wheelhouse real wheels built by pip and
installed by pip with ``--no-index`` into a fresh venv. Every refusal is checked through the CLI: exit code, the
one-line message naming the file, and no traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.cli.release import serve_release
from pipelines.release.build import BuiltRelease, WheelhouseOptions, build_release
from pipelines.release.errors import ReleaseError
from pipelines.release.hashing import sha256_file
from pipelines.release.install import install_targets
from pipelines.release.keys import load_private_key, load_public_key
from pipelines.release.manifest import write_signed_manifest
from pipelines.release.verify import verify_bundle
from pipelines.release.wheelhouse import read_pins, torch_spec_from_makefile
from pipelines.tracking.registry import alias_version
from pipelines.tracking.serving import load_version

from .conftest import NAME, Publisher

REPO = Path(__file__).resolve().parents[2]
MODEL = f"models/{NAME}/v2"
runner = CliRunner()


def _build(publisher: Publisher, out: Path, wheels: Path | None, **kw: object) -> BuiltRelease:
    return build_release(
        [f"models:/{NAME}@champion"],
        out,
        tracking_uri=publisher.tracking_uri,
        key=load_private_key(publisher.private_pem),
        name="shipa",
        version=str(kw.get("version", "2026.12.01")),
        wheelhouse=WheelhouseOptions(enabled=wheels is not None, lock=REPO / "constraints.txt", wheels_from=wheels),
    )


@pytest.fixture(scope="module")
def bundle(publisher: Publisher, probe_wheels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One signed bundle of the champion with the two-wheel wheelhouse (copied before a test changes it)."""
    out = tmp_path_factory.mktemp("bundle") / "shipa-2026.12.01.shipa-release"
    _build(publisher, out, probe_wheels)
    return out


@pytest.fixture
def copy(bundle: Path, tmp_path: Path) -> Path:
    """A copy of the bundle this test may change."""
    return Path(shutil.copytree(bundle, tmp_path / "copy.shipa-release"))


def _refused(result: object, code: int, *fragments: str) -> None:
    output = getattr(result, "output", "")
    assert getattr(result, "exit_code", None) == code, output
    assert "Traceback" not in output
    assert isinstance(getattr(result, "exception", None), SystemExit), output  # an exit, not a crash
    for fragment in fragments:
        assert fragment in output, output


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path: Path) -> None:
    private, public = tmp_path / "k" / "release.pem", tmp_path / "k" / "release.pub"
    result = runner.invoke(app, ["release", "keygen", "--out-private", str(private), "--out-public", str(public)])
    assert result.exit_code == 0, result.output
    assert private.stat().st_mode & 0o777 == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    key = load_private_key(private.read_text())
    assert load_public_key(public).public_bytes_raw() == key.public_key().public_bytes_raw()
    again = runner.invoke(app, ["release", "keygen", "--out-private", str(private), "--out-public", str(public)])
    _refused(again, 2, f"{private} exists already")


def test_the_bundle_holds_model_card_domain_settings_sbom_and_a_signed_manifest(
    bundle: Path, publisher: Publisher
) -> None:
    release = json.loads((bundle / "release.json").read_text())
    (model,) = release["models"]
    assert (model["name"], model["version"], model["released_from"]) == (NAME, "2", f"models:/{NAME}@champion")
    assert (bundle / MODEL / "model" / "MLmodel").is_file()
    assert json.loads((bundle / MODEL / "model_card.json").read_text()) == json.loads(json.dumps(publisher.card))
    assert "## Intended input" in (bundle / MODEL / "model_card.md").read_text()
    domain = json.loads((bundle / MODEL / "input_domain.json").read_text())
    assert domain["modalities"] == ["CR", "DX"] and domain["body_parts"] == ["CHEST"]
    env = (bundle / "config" / "service.env").read_text()
    assert "SHIPA_SERVICE_HOST=127.0.0.1\n" in env and "SHIPA_SERVICE_DEMO_MODE=false\n" in env
    assert "#   SHIPA_SERVICE_TOKEN_PEPPER\n" in env and "#   SHIPA_SERVICE_AUDIT_KEY\n" in env
    assert not any(
        line.startswith(("SHIPA_SERVICE_TOKEN_PEPPER", "SHIPA_SERVICE_DATABASE_URL")) for line in env.splitlines()
    )

    sbom = json.loads((bundle / "sbom.cdx.json").read_text())
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.5")
    libraries = {c["name"]: c for c in sbom["components"] if c["type"] == "library"}
    assert sorted(libraries) == ["shipa-probe-app", "shipa-probe-core"]
    core = libraries["shipa-probe-core"]
    assert core["purl"] == "pkg:pypi/shipa-probe-core@1.0"
    assert core["hashes"] == [
        {"alg": "SHA-256", "content": sha256_file(bundle / "wheels" / "shipa_probe_core-1.0-py3-none-any.whl")}
    ]
    (ml,) = [c for c in sbom["components"] if c["type"] == "machine-learning-model"]
    assert (ml["name"], ml["version"]) == (NAME, "2")

    manifest = json.loads((bundle / "manifest.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = sorted(
        p.relative_to(bundle).as_posix()
        for p in bundle.rglob("*")
        if p.is_file() and p.relative_to(bundle).as_posix() not in ("manifest.json", "manifest.sig")
    )
    assert sorted(listed) == on_disk
    card = listed[f"{MODEL}/model_card.json"]
    assert card["sha256"] == sha256_file(bundle / MODEL / "model_card.json")
    assert card["size"] == (bundle / MODEL / "model_card.json").stat().st_size
    verified = verify_bundle(bundle, load_public_key(publisher.public_key))
    cli = runner.invoke(app, ["release", "verify", str(bundle), "--trusted-key", str(publisher.public_key)])
    assert cli.exit_code == 0, cli.output
    assert f"release shipa 2026.12.01: signature and {len(listed)} files verified" in cli.output
    assert verified.release == {"name": "shipa", "version": "2026.12.01", "created": release["created"]}
    assert verified.manifest_sha256 == sha256_file(bundle / "manifest.json")


def test_the_cli_builds_a_release_signed_with_the_key_from_the_environment(
    publisher: Publisher, probe_wheels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "cli.shipa-release"
    argv = ["release", f"models:/{NAME}/1", "--out", str(out), "--wheels-from", str(probe_wheels)]
    argv += ["--tracking-uri", publisher.tracking_uri, "--root", str(REPO), "--service-setting", "PORT=8443"]
    monkeypatch.delenv("SHIPA_RELEASE_SIGNING_KEY", raising=False)
    _refused(runner.invoke(app, argv), 2, "SHIPA_RELEASE_SIGNING_KEY is not set")
    assert not out.exists()
    monkeypatch.setenv("SHIPA_RELEASE_SIGNING_KEY", publisher.private_pem)
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["models"] == [f"{NAME}/1"] and summary["wheels"] == 2
    assert summary["manifest_sha256"] == sha256_file(out / "manifest.json")
    assert summary["missing_pins"] == len(read_pins(REPO / "constraints.txt"))  # a two-wheel house: every pin
    assert "SHIPA_SERVICE_PORT=8443\n" in (out / "config" / "service.env").read_text()
    verify_bundle(out, load_public_key(publisher.public_key))
    _refused(runner.invoke(app, argv), 2, "exists already")
    missing = runner.invoke(app, ["release", "models:/shipa-diagnosis-absent@champion", "--out", str(tmp_path / "x")])
    _refused(missing, 2, "shipa-diagnosis-absent")


def test_one_changed_byte_is_refused_naming_the_file(copy: Path, publisher: Publisher, tmp_path: Path) -> None:
    target = copy / MODEL / "model" / "MLmodel"
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01
    target.write_bytes(bytes(data))
    key = str(publisher.public_key)
    install = runner.invoke(app, ["install", str(copy), "--trusted-key", key, "--venv", str(tmp_path / "v")])
    _refused(install, 3, f"{MODEL}/model/MLmodel: sha256 differs from the signed manifest")
    verify = runner.invoke(app, ["release", "verify", str(copy), "--trusted-key", key])
    _refused(verify, 3, f"{copy.resolve() / MODEL / 'model' / 'MLmodel'}: sha256 differs")
    assert not (tmp_path / "v").exists()  # refused before anything was installed
    serve = runner.invoke(app, ["serve", "--release", str(copy), "--trusted-key", key])
    _refused(serve, 3, f"{MODEL}/model/MLmodel: sha256 differs from the signed manifest")


def test_a_bundle_signed_by_another_key_is_refused(copy: Path, publisher: Publisher, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    manifest = json.loads((copy / "manifest.json").read_text())
    write_signed_manifest(copy, manifest["release"], Ed25519PrivateKey.generate())
    key = str(publisher.public_key)
    install = runner.invoke(app, ["install", str(copy), "--trusted-key", key, "--venv", str(tmp_path / "v")])
    _refused(install, 3, "signed by another key")
    serve = runner.invoke(app, ["serve", "--release", str(copy), "--trusted-key", key])
    _refused(serve, 3, "signed by another key")


def test_a_changed_manifest_an_added_wheel_and_a_missing_signature_are_refused(
    copy: Path, publisher: Publisher, probe_wheels: Path
) -> None:
    trusted = load_public_key(publisher.public_key)
    (copy / "wheels" / "extra-1.0-py3-none-any.whl").write_bytes(b"not signed")
    with pytest.raises(Exception, match=r"wheels/extra-1.0-py3-none-any.whl: not in the signed manifest"):
        verify_bundle(copy, trusted)
    (copy / "wheels" / "extra-1.0-py3-none-any.whl").unlink()
    text = (copy / "manifest.json").read_text()
    (copy / "manifest.json").write_text(text.replace('"size": ', '"size":  ', 1))
    with pytest.raises(Exception, match=r"manifest.json: does not match its signature"):
        verify_bundle(copy, trusted)
    (copy / "manifest.sig").unlink()
    result = runner.invoke(app, ["install", str(copy), "--trusted-key", str(publisher.public_key)])
    _refused(result, 3, "the bundle is not signed")
    private_as_trusted = runner.invoke(app, ["install", str(copy), "--trusted-key", str(copy / "release.json")])
    _refused(private_as_trusted, 2, "release.json is neither PEM nor base64")


def test_install_builds_a_venv_offline_from_the_wheelhouse_and_releases_lists_it(
    bundle: Path, publisher: Publisher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    releases = tmp_path / "releases"
    monkeypatch.setenv("SHIPA_RELEASES_DIR", str(releases))
    empty = runner.invoke(app, ["releases"])
    assert empty.exit_code == 0 and "no release is installed" in empty.output
    venv = tmp_path / "venv"
    result = runner.invoke(
        app, ["install", str(bundle), "--trusted-key", str(publisher.public_key), "--venv", str(venv)]
    )
    assert result.exit_code == 0, result.output
    assert "installed release shipa 2026.12.01" in result.output
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import probe_app; print(probe_app.answer())"],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert done.stdout.strip() == "42"
    installed = json.loads((releases / "installed.json").read_text())["installed"]
    assert len(installed) == 1
    entry = installed[0]
    assert entry["models"] == [f"{NAME}/2"] and entry["path"] == str(bundle.resolve())
    assert entry["manifest_sha256"] == sha256_file(bundle / "manifest.json") and entry["venv"] == str(venv.resolve())

    second = runner.invoke(
        app, ["install", str(bundle), "--trusted-key", str(publisher.public_key), "--venv", str(venv)]
    )
    _refused(second, 2, f"{venv.resolve()} exists already")
    table = runner.invoke(app, ["releases"])
    assert table.exit_code == 0
    lines = table.output.splitlines()
    assert lines[0].split()[:4] == ["INSTALLED", "NAME", "VERSION", "MANIFEST"]
    assert "shipa" in lines[1] and "2026.12.01" in lines[1] and f"{NAME}/2" in lines[1]

    # Installed again beside it (a second venv): listed newest first.
    venv2 = tmp_path / "venv2"
    again = runner.invoke(
        app, ["install", str(bundle), "--trusted-key", str(publisher.public_key), "--venv", str(venv2)]
    )
    assert again.exit_code == 0, again.output
    listed = json.loads(runner.invoke(app, ["releases", "--json"]).stdout)["installed"]
    assert [e["venv"] for e in listed] == [str(venv2.resolve()), str(venv.resolve())]


def test_a_wheelhouse_missing_a_dependency_is_never_released_nor_installed(
    publisher: Publisher, app_wheel_only: Path, copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "partial.shipa-release"
    with pytest.raises(ReleaseError, match=r"offline install check(.|\n)*shipa-probe-core"):
        _build(publisher, out, app_wheel_only)
    assert not out.exists()
    # A publisher-signed bundle that lacks one (signed around the check): pip --no-index fails, cleanly.
    (copy / "wheels" / "shipa_probe_core-1.0-py3-none-any.whl").unlink()
    manifest = json.loads((copy / "manifest.json").read_text())
    write_signed_manifest(copy, manifest["release"], load_private_key(publisher.private_pem))
    result = runner.invoke(
        app,
        ["install", str(copy), "--trusted-key", str(publisher.public_key), "--venv", str(tmp_path / "v")],
        env={"SHIPA_RELEASES_DIR": str(tmp_path / "releases")},
    )
    _refused(result, 2, "pip --no-index) failed", "shipa-probe-core")
    assert not (tmp_path / "releases" / "installed.json").exists()


def test_serve_release_registers_the_bundle_champion_for_the_service_loader(
    bundle: Path, publisher: Publisher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    stale = state / "models" / NAME / "v2"  # a copy the service would reuse by name and version
    stale.mkdir(parents=True)
    (stale / ".shipa-complete").write_text("2")
    monkeypatch.setenv("SHIPA_SERVICE_STATE_DIR", str(state))
    monkeypatch.delenv("SHIPA_SERVICE_HOST", raising=False)
    monkeypatch.setenv("SHIPA_SERVICE_PORT", "9999")  # the environment wins over the bundle's settings
    uri = serve_release(bundle, publisher.public_key)
    assert not stale.exists()
    manifest_sha = sha256_file(bundle / "manifest.json")
    (store,) = (state / "release-stores").iterdir()
    assert store.name.startswith(f"{manifest_sha[:16]}-{os.getpid()}-")
    assert uri == f"sqlite:///{(store / 'mlflow.db').resolve()}"
    assert alias_version(NAME, "champion", tracking_uri=uri) == "2"
    loaded = load_version(NAME, tracking_uri=uri, cache_dir=state / "models")
    assert loaded.version == "2" and loaded.alias == "champion"
    assert loaded.card == json.loads(json.dumps(publisher.card))
    assert loaded.metadata["input_domain"]["modalities"] == ["CR", "DX"]
    assert float(loaded.pyfunc.predict(pd.DataFrame({"x": [1.5]}))["x"].iloc[0]) == 3.0
    assert os.environ["SHIPA_SERVICE_HOST"] == "127.0.0.1" and os.environ["SHIPA_SERVICE_PORT"] == "9999"
    gone = state / "release-stores" / f"{manifest_sha[:16]}-999999999-0a0b0c0d"  # of a process that ended
    gone.mkdir()
    again = serve_release(bundle, publisher.public_key)
    assert again != uri and alias_version(NAME, "champion", tracking_uri=again) == "2"
    assert not gone.exists() and store.is_dir()  # this process's first store stays while the process lives
    verify_bundle(bundle, load_public_key(publisher.public_key))  # serving never writes into the bundle


def test_serve_release_needs_a_trusted_key_and_no_other_store(bundle: Path) -> None:
    _refused(runner.invoke(app, ["serve", "--release", str(bundle)]), 2, "--release needs --trusted-key")
    both = runner.invoke(
        app, ["serve", "--release", str(bundle), "--trusted-key", "k.pub", "--tracking-uri", "sqlite:///x.db"]
    )
    _refused(both, 2, "give --release or --tracking-uri, not both")


def test_with_the_project_wheel_only_it_and_torch_are_named_to_pip() -> None:
    names = ["pytest-9.2.0-py3-none-any.whl", "shipa-0.1.0-py3-none-any.whl"]
    names.append("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
    wheels = [Path("wheels") / n for n in names]
    assert [w.name for w in install_targets(wheels)] == names[1:]  # dev tools stay out of the hospital's venv
    assert install_targets(wheels[:1]) == wheels[:1]  # no project wheel: the whole wheelhouse


def test_the_torch_build_comes_from_the_makefile_and_the_lock_leaves_it_out() -> None:
    spec = torch_spec_from_makefile(REPO / "Makefile")
    assert spec is not None and spec.startswith("torch==")
    pins = read_pins(REPO / "constraints.txt")
    assert "torch" not in pins and pins["mlflow"]


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("SHIPA_RELEASE_FULL_TEST") != "1", reason="set SHIPA_RELEASE_FULL_TEST=1 (downloads 1-2 GB)"
)
def test_the_full_wheelhouse_installs_shipa_offline(publisher: Publisher, tmp_path: Path) -> None:
    out = tmp_path / "full.shipa-release"
    build_release(
        [f"models:/{NAME}@champion"],
        out,
        tracking_uri=publisher.tracking_uri,
        key=load_private_key(publisher.private_pem),
        name="shipa",
        wheelhouse=WheelhouseOptions(
            lock=REPO / "constraints.txt", project=REPO, torch_spec=torch_spec_from_makefile(REPO / "Makefile")
        ),
    )
    result = runner.invoke(
        app,
        ["install", str(out), "--trusted-key", str(publisher.public_key), "--venv", str(tmp_path / "venv")],
        env={"SHIPA_RELEASES_DIR": str(tmp_path / "releases")},
    )
    assert result.exit_code == 0, result.output
    done = subprocess.run([str(tmp_path / "venv" / "bin" / "shipa"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "release" in done.stdout
