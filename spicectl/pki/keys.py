"""Private keys: generation, PEM encoding, loading with a passphrase."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from spicectl.errors import AuthError, InvalidInput
from spicectl.pki.profiles import check_key_type

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
EC_CURVES: dict[str, ec.EllipticCurve] = {"ec-p256": ec.SECP256R1(), "ec-p384": ec.SECP384R1()}
MAX_PASSPHRASE = 1023  # OpenSSL's PEM encryption takes no longer passphrase


def generate_key(key_type: str) -> PrivateKey:
    check_key_type(key_type)
    if key_type.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[4:]))
    return ec.generate_private_key(EC_CURVES[key_type])


def key_type_of(key) -> str:
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return f"rsa-{key.key_size}"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        by_curve = {curve.name: name for name, curve in EC_CURVES.items()}
        return by_curve.get(key.curve.name, f"ec-{key.curve.name}")
    return type(key).__name__


def key_to_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM, which QEMU's spice-server and OpenSSL read for both RSA and EC."""
    if passphrase is not None and len(passphrase) > MAX_PASSPHRASE:
        raise InvalidInput(f"the passphrase is {len(passphrase)} bytes long; a key's encryption takes at most "
                           f"{MAX_PASSPHRASE}")
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_key(path: Path, passphrase: bytes | None = None) -> PrivateKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read key {path}: {exc.strerror}") from None
    encrypted = b"ENCRYPTED" in data
    if encrypted and passphrase is None:
        raise AuthError(
            f"key {path} is protected by a passphrase",
            hint="give it with --passphrase-file, --passphrase-fd or SPICECTL_CA_PASSPHRASE",
        )
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted else None)
    except ValueError as exc:
        if encrypted:
            raise AuthError(f"wrong passphrase for key {path}") from None
        raise InvalidInput(f"{path} is not a valid PEM private key ({exc})") from None
    except TypeError as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise InvalidInput(f"{path}: unsupported key type {type(key).__name__}")
    return key
