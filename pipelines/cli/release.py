"""``shipa release``, ``shipa release keygen``, ``shipa install``, ``shipa releases`` and ``shipa serve --release``.

The publisher's signing key comes from the environment variable ``SHIPA_RELEASE_SIGNING_KEY`` only (PEM PKCS#8 as
``shipa release keygen`` writes it, or base64 of the 32 raw private-key bytes), never from a file in the
repository. A hospital holds the publisher's public key and passes it as ``--trusted-key``; every command that
uses a bundle verifies it first and refuses it, naming the file, when anything differs.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from pipelines.cli.common import JsonOpt, RootOpt, TrackingUriOpt, guard, print_summary, tracking_uri_of

log = logging.getLogger("shipa")

SIGNING_KEY_ENV = "SHIPA_RELEASE_SIGNING_KEY"
RELEASES_DIR_ENV = "SHIPA_RELEASES_DIR"
DEFAULT_RELEASES_DIR = Path("~/.local/share/shipa/releases")
DEFAULT_COMMAND = "build"


class _DefaultBuild(TyperGroup):
    """``shipa release models:/... --out DIR`` runs ``build``; ``shipa release keygen`` the key generator."""

    # typer bundles its own click, whose Context is not the click package's: ``ctx`` is typed loosely.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [DEFAULT_COMMAND, *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_DefaultBuild,
    help="Build a signed release bundle (models, settings, wheelhouse, SBOM), or make its signing key pair.",
    no_args_is_help=True,
)

TrustedKeyOpt = Annotated[
    Path,
    typer.Option("--trusted-key", help="the publisher's Ed25519 public key (PEM, or base64 of its 32 raw bytes)"),
]
ReleasesDirOpt = Annotated[
    Path,
    typer.Option(
        "--releases-dir",
        envvar=RELEASES_DIR_ENV,
        help=f"where installed releases are recorded [default: {RELEASES_DIR_ENV}, else {DEFAULT_RELEASES_DIR}]",
        show_default=False,
    ),
]


def _signing_key() -> Any:
    from pipelines.release.errors import SigningKeyError
    from pipelines.release.keys import load_private_key

    text = os.environ.get(SIGNING_KEY_ENV, "")
    if not text.strip():
        raise SigningKeyError(
            f"{SIGNING_KEY_ENV} is not set: put the publisher's private key in it (PEM, or base64 of its 32 raw "
            "bytes; make one with `shipa release keygen`)"
        )
    return load_private_key(text, SIGNING_KEY_ENV)


def _settings(pairs: list[str]) -> dict[str, str]:
    from pipelines.release.errors import ReleaseError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ReleaseError(f"--service-setting {pair!r} is not NAME=VALUE")
        out[key.strip().lower().removeprefix("shipa_service_")] = value
    return out


@app.command("build")
def build(
    uris: Annotated[
        list[str], typer.Argument(help="models:/<name>@<alias> or models:/<name>/<version>, one per model")
    ],
    out: Annotated[Path, typer.Option("--out", help="the bundle folder to write (must not exist)")],
    name: Annotated[str, typer.Option("--name", help="the release's name")] = "shipa",
    release_version: Annotated[
        str | None,
        typer.Option("--release-version", help="the release's version [default: the UTC time]", show_default=False),
    ] = None,
    wheelhouse: Annotated[
        bool, typer.Option("--wheelhouse/--no-wheelhouse", help="include the wheelhouse (about 1-2 GB from the index)")
    ] = True,
    wheels_from: Annotated[
        Path | None,
        typer.Option("--wheels-from", help="copy the wheels under this folder instead of downloading (offline)"),
    ] = None,
    torch_spec: Annotated[
        str | None,
        typer.Option("--torch-spec", help="pip arguments of the torch build [default: the Makefile's TORCH_SPEC]"),
    ] = None,
    service_setting: Annotated[
        list[str] | None,
        typer.Option("--service-setting", help="a non-secret service setting NAME=VALUE (repeatable)"),
    ] = None,
    root: RootOpt = Path("."),
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Write a signed release bundle: models with cards and input domains, settings, wheelhouse, SBOM, manifest.

    Signed with the Ed25519 key in SHIPA_RELEASE_SIGNING_KEY (PEM, or base64 of the 32 raw bytes).
    """
    from pipelines.release.build import WheelhouseOptions, build_release
    from pipelines.release.wheelhouse import torch_spec_from_makefile

    def run() -> dict[str, Any]:
        key = _signing_key()
        options = WheelhouseOptions(
            enabled=wheelhouse,
            lock=root / "constraints.txt",
            project=root,
            torch_spec=torch_spec or torch_spec_from_makefile(root / "Makefile"),
            wheels_from=wheels_from,
        )
        built = build_release(
            uris,
            out,
            tracking_uri=tracking_uri_of(tracking_uri, root),
            key=key,
            name=name,
            version=release_version,
            wheelhouse=options,
            settings=_settings(service_setting or []),
        )
        return {
            "release": f"{built.release['name']} {built.release['version']}",
            "out": str(built.root),
            "models": [f"{m['name']}/{m['version']}" for m in built.release["models"]],
            "manifest_sha256": built.manifest_sha256,
            "signing_key_id": built.release["signing_key_id"],
            "wheels": (built.release["wheelhouse"] or {}).get("wheels", 0),
            "missing_pins": len(built.missing_pins),
        }

    print_summary(guard(run))


@app.command("keygen")
def keygen(
    out_private: Annotated[Path, typer.Option("--out-private", help="the private key file to write (mode 0600)")],
    out_public: Annotated[Path, typer.Option("--out-public", help="the public key file to write (give it out)")],
) -> None:
    """Make an Ed25519 key pair (PEM files): the private one signs releases, hospitals trust the public one."""
    from pipelines.release.keys import generate_key_pair

    kid = guard(lambda: generate_key_pair(out_private, out_public))
    typer.echo(f"key {kid[:16]}: private {out_private} (0600, keep it out of git), public {out_public}")
    typer.echo(f'sign with it: export {SIGNING_KEY_ENV}="$(cat {out_private})"', err=True)


@app.command("verify")
def verify(
    bundle: Annotated[Path, typer.Argument(help="the release bundle folder")],
    trusted_key: TrustedKeyOpt,
) -> None:
    """Verify a release bundle: its signature with the trusted key, then every file's sha256; nothing is installed."""
    verified = guard(lambda: _verify(bundle, trusted_key))
    release = verified.release
    typer.echo(
        f"release {release.get('name')} {release.get('version')}: signature and {len(verified.manifest['files'])} "
        f"files verified (key {verified.key_id[:16]}, manifest sha256 {verified.manifest_sha256[:16]})"
    )


def _releases_dir(path: Path | None) -> Path:
    return Path(path or DEFAULT_RELEASES_DIR).expanduser()


def _verify(bundle: Path, trusted_key: Path) -> Any:
    from pipelines.release.keys import load_public_key
    from pipelines.release.verify import verify_bundle

    return verify_bundle(bundle, load_public_key(trusted_key))


def install(
    bundle: Annotated[Path, typer.Argument(help="the release bundle folder")],
    trusted_key: TrustedKeyOpt,
    venv: Annotated[
        Path | None,
        typer.Option("--venv", help="the venv to create [default: <releases dir>/<name>-<version>/venv]"),
    ] = None,
    releases_dir: ReleasesDirOpt = DEFAULT_RELEASES_DIR,
) -> None:
    """Verify a release bundle (signature, then every file), then install its wheelhouse into a new venv offline."""
    from pipelines.release.build import read_release
    from pipelines.release.install import install_wheelhouse
    from pipelines.release.installed import InstalledRelease, record_installed

    def run() -> tuple[InstalledRelease, Path]:
        verified = _verify(bundle, trusted_key)
        release = read_release(verified.root)
        where = _releases_dir(releases_dir)
        target = (venv or where / f"{release['name']}-{release['version']}" / "venv").expanduser().resolve()
        install_wheelhouse(verified, target)
        entry = InstalledRelease(
            name=str(release["name"]),
            version=str(release["version"]),
            models=[f"{m['name']}/{m['version']}" for m in release["models"]],
            manifest_sha256=verified.manifest_sha256,
            path=str(verified.root),
            venv=str(target),
            installed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            key_id=verified.key_id,
        )
        return entry, record_installed(where, entry)

    entry, registry = guard(run)
    typer.echo(
        f"installed release {entry.name} {entry.version} ({', '.join(entry.models)}) into {entry.venv}; "
        f"manifest sha256 {entry.manifest_sha256[:16]}; recorded in {registry}"
    )


def releases(releases_dir: ReleasesDirOpt = DEFAULT_RELEASES_DIR, as_json: JsonOpt = False) -> None:
    """List the installed releases, newest first."""
    from dataclasses import asdict

    from pipelines.release.installed import newest_first, read_installed

    entries = newest_first(guard(lambda: read_installed(_releases_dir(releases_dir))))
    if as_json:
        print_summary({"installed": [asdict(e) for e in entries]})
        return
    if not entries:
        typer.echo(f"no release is installed (recorded in {_releases_dir(releases_dir)})")
        return
    header = ("INSTALLED", "NAME", "VERSION", "MANIFEST", "MODELS", "PATH")
    rows = [(e.installed_at, e.name, e.version, e.manifest_sha256[:16], ", ".join(e.models), e.path) for e in entries]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        typer.echo("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]]))


def serve_release(bundle: Path, trusted_key: Path | None, tracking_uri: str | None = None) -> str:
    """Verify a bundle for ``shipa serve --release`` and register its models in a working MLflow store.

    The bundle's ``config/service.env`` first fills the ``SHIPA_SERVICE_*`` settings the environment leaves unset.
    The store is rebuilt under the service's state folder (``<state dir>/release-stores/``) at every start and the
    service's downloaded copies of the released versions are dropped, so only the verified files are served; the
    bundle itself is never written to.

    Args:
        bundle: the release bundle folder.
        trusted_key: the publisher's public key file.
        tracking_uri: the ``--tracking-uri`` given beside ``--release`` (an error: a release serves its own).

    Returns:
        The working store's tracking URI (the service loads the bundle's champions from it).
    """
    from pipelines.release.build import read_release
    from pipelines.release.errors import ReleaseError
    from pipelines.release.service_config import SERVICE_ENV, read_env_file
    from pipelines.release.store import prepare_serving
    from pipelines.service.assemble import MODELS_DIRNAME
    from pipelines.service.settings import DEFAULT_STATE_DIR, ENV_PREFIX

    def run() -> str:
        if trusted_key is None:
            raise ReleaseError("--release needs --trusted-key (the publisher's public key)")
        if tracking_uri is not None:
            raise ReleaseError("give --release or --tracking-uri, not both (a release serves its own models)")
        verified = _verify(bundle, trusted_key)
        release = read_release(verified.root)
        label = f"{release['name']} {release['version']}"
        config = verified.root / SERVICE_ENV
        if config.is_file():
            for key, value in read_env_file(config).items():
                os.environ.setdefault(key, value)
        uri = prepare_serving(
            verified.root,
            release["models"],
            state_dir=Path(os.environ.get(f"{ENV_PREFIX}STATE_DIR") or DEFAULT_STATE_DIR),
            models_dirname=MODELS_DIRNAME,
            manifest_sha256=verified.manifest_sha256,
            release=label,
        )
        log.info("serving release %s (manifest sha256 %s)", label, verified.manifest_sha256[:16])
        return uri

    return guard(run)


def mount(root: typer.Typer) -> None:
    """Add ``release``, ``install`` and ``releases`` to the ``shipa`` command tree."""
    root.add_typer(app, name="release")
    root.command("install")(install)
    root.command("releases")(releases)
