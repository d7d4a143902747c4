"""Who made a bundle: an Ed25519 signature over ``manifest.json``, checked against the maker's public key.

The manifest lists the sha256 and size of every file of the bundle, so a valid signature over its bytes
covers the whole bundle. The signature is the 64 raw bytes of ``manifest.sig`` beside the manifest (the one
file the manifest does not list). An app ships the public key; ``load_bundle(path, public_key=...)`` then
refuses a bundle that is unsigned, signed by another key, or whose manifest changed after signing.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from xsam_edge.files import atomic_write_bytes
from xsam_edge.spec.bundle import MANIFEST_FILE, SIGNATURE_FILE, BundleError

SIGNATURE_BYTES = 64


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        return ed25519
    except ImportError as err:  # pragma: no cover - cryptography is a dependency
        raise RuntimeError(
            "bundle signatures need the 'cryptography' package: pip install cryptography"
        ) from err


def _pem(key: Any) -> bytes | None:
    if isinstance(key, bytes):
        return key
    if isinstance(key, str | os.PathLike):
        return Path(key).read_bytes()
    return None


def load_private_key(key: Any) -> Any:
    """An Ed25519 private key from PEM bytes, a PEM file, or a key object."""
    from cryptography.hazmat.primitives import serialization

    pem = _pem(key)
    loaded = key if pem is None else serialization.load_pem_private_key(pem, password=None)
    if not isinstance(loaded, _crypto().Ed25519PrivateKey):
        raise ValueError(
            "the signing key must be an Ed25519 private key (xsam-edge sign --new-key makes one)"
        )
    return loaded


def load_public_key(key: Any) -> Any:
    """An Ed25519 public key from PEM bytes, a PEM file, or a key object."""
    from cryptography.hazmat.primitives import serialization

    pem = _pem(key)
    loaded = key if pem is None else serialization.load_pem_public_key(pem)
    if not isinstance(loaded, _crypto().Ed25519PublicKey):
        raise ValueError("the public key must be an Ed25519 public key (xsam-edge sign --new-key makes one)")
    return loaded


def new_key_pair(folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``signing-key.pem`` (private, mode 0600) and ``signing-key.pub.pem`` into ``folder``."""
    from cryptography.hazmat.primitives import serialization

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    private = _crypto().Ed25519PrivateKey.generate()
    private_path, public_path = folder / "signing-key.pem", folder / "signing-key.pub.pem"
    atomic_write_bytes(
        private_path,
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    os.chmod(private_path, 0o600)
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write_bytes(public_path, public)
    return private_path, public_path


def sign_bundle(bundle: str | os.PathLike, private_key: Any) -> Path:
    """Sign the bundle's ``manifest.json`` into ``manifest.sig`` (check it with ``load_bundle`` first)."""
    root = Path(bundle)
    signature = load_private_key(private_key).sign((root / MANIFEST_FILE).read_bytes())
    path = root / SIGNATURE_FILE
    atomic_write_bytes(path, signature)
    return path


def verify_manifest(root: Path, manifest_bytes: bytes, public_key: Any) -> None:
    """Check ``manifest.sig`` against the manifest's bytes as read (not re-read).

    Raises:
        BundleError: no signature, a malformed one, or one that the key does not verify.
    """
    from cryptography.exceptions import InvalidSignature

    path = Path(root) / SIGNATURE_FILE
    try:
        info = path.lstat()
    except FileNotFoundError:
        raise BundleError(
            f"{root} is not signed (no {SIGNATURE_FILE}) but a signature was required"
        ) from None
    if not stat.S_ISREG(info.st_mode) or info.st_size != SIGNATURE_BYTES:
        raise BundleError(f"{path} is not an Ed25519 signature ({SIGNATURE_BYTES} bytes in a regular file)")
    try:
        load_public_key(public_key).verify(path.read_bytes(), manifest_bytes)
    except InvalidSignature:
        raise BundleError(
            f"{root}'s signature does not match its manifest and this public key: the bundle was changed "
            "after signing, or someone else signed it"
        ) from None
