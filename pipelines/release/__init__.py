"""Release bundles: what a hospital installs offline, signed by the publisher.

A bundle is a folder: the released MLflow model versions with their model cards and input domains
(``models/``), the non-secret service settings (``config/service.env``), a wheelhouse of every pinned dependency
(``wheels/``), a CycloneDX SBOM (``sbom.cdx.json``), ``release.json`` (what was released), and ``manifest.json``
(every file's sha256 and size) signed with Ed25519 into ``manifest.sig``. Nothing in a bundle is trusted before
:func:`pipelines.release.verify.verify_bundle` has checked the signature against the hospital's copy of the
publisher's public key and every file against the manifest.

Modules: ``errors`` (named exceptions), ``hashing``, ``keys`` (Ed25519 key files), ``manifest`` (write, sign),
``verify`` (check a bundle), ``wheelhouse`` (pinned wheels), ``sbom`` (CycloneDX), ``models`` (export versions
from the registry), ``service_config`` (non-secret settings), ``store`` (a bundle's models as a local MLflow
registry for the service), ``build`` (the whole bundle), ``install`` (venv from the wheelhouse) and
``installed`` (the record of installed releases).
"""
