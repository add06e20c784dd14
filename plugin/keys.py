"""Private keys the command line signs JWTs with: ``invoke``'s CDS client JWT and the audit's
SMART Backend Services client assertion (``--fhir-export``).

One reading for both: a PEM file (EC or RSA), a JWK, or a JWK Set (``kid`` picks the key).
Which algorithm a key signs with is each caller's rule, not this module's.
"""

from __future__ import annotations

import json
from typing import Any, cast

from joserfc.jwk import ECKey, KeySet, RSAKey, import_key

__all__ = ["PrivateKeyError", "load_private_key"]


class PrivateKeyError(ValueError):
    """The file holds no usable private key; the message says which file and why."""


def load_private_key(raw: bytes, where: str, kid: str | None = None) -> ECKey | RSAKey:
    """The private EC or RSA key in ``raw`` (a file's bytes, read within bounds by the caller);
    ``where`` names the option and file in the error (e.g. ``--jwt-key key.pem``)."""
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        document = None
    try:
        key: Any
        if isinstance(document, dict) and isinstance(document.get("keys"), list):
            keys = [
                k
                for k in KeySet.import_key_set(cast(Any, document))
                if k.is_private and (kid is None or k.kid == kid)
            ]
            if not keys:
                wanted = f" with kid {kid!r}" if kid else ""
                raise PrivateKeyError(f"{where}: the JWK Set has no private key{wanted}")
            key = keys[0]
        elif isinstance(document, dict):
            key = import_key(document)
        else:
            key = _import_pem(raw)
    except PrivateKeyError:
        raise
    except Exception:  # joserfc/cryptography raise many types for a bad key; say it plainly
        raise PrivateKeyError(_NOT_A_KEY.format(where=where)) from None
    if not isinstance(key, ECKey | RSAKey) or not key.is_private:
        raise PrivateKeyError(_NOT_A_KEY.format(where=where))
    return key


_NOT_A_KEY = "{where}: not a private EC or RSA key (PEM, JWK or JWK Set)"


def _import_pem(raw: bytes) -> ECKey | RSAKey:
    try:
        return ECKey.import_key(raw)
    except Exception:  # not an EC key: try RSA
        return RSAKey.import_key(raw)
