"""HTTP Digest authentication (RFC 7616) as cameras challenge it: for ONVIF SOAP over HTTP and for RTSP."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass
class DigestChallenge:
    """An HTTP Digest challenge (RFC 7616), reused with an increasing nonce count."""

    realm: str
    nonce: str
    qop_auth: bool
    algorithm: str
    opaque: str | None
    count: int = 0

    @classmethod
    def parse(cls, header: str) -> DigestChallenge | None:
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() != "digest":
            return None
        p = {m[1].lower(): m[2] if m[2] is not None else m[3] for m in _AUTH_PARAM.finditer(rest)}
        algorithm = p.get("algorithm", "MD5").upper()
        if "nonce" not in p or algorithm not in ("MD5", "MD5-SESS", "SHA-256", "SHA-256-SESS"):
            return None
        qops = [q.strip() for q in p.get("qop", "").split(",")]
        return cls(p.get("realm", ""), p["nonce"], "auth" in qops, algorithm, p.get("opaque"))

    def authorization(self, user: str, password: str, method: str, uri: str) -> str:
        name = "sha256" if self.algorithm.startswith("SHA-256") else "md5"

        def h(text: str) -> str:
            return hashlib.new(name, text.encode(), usedforsecurity=False).hexdigest()

        self.count += 1
        cnonce, nc = os.urandom(8).hex(), f"{self.count:08x}"
        ha1 = h(f"{user}:{self.realm}:{password}")
        if self.algorithm.endswith("-SESS"):
            ha1 = h(f"{ha1}:{self.nonce}:{cnonce}")
        ha2 = h(f"{method}:{uri}")
        user_q = user.replace("\\", "\\\\").replace('"', '\\"')
        fields = f'username="{user_q}", realm="{self.realm}", nonce="{self.nonce}", uri="{uri}"'
        fields += f", algorithm={self.algorithm}"
        if self.qop_auth:
            response = h(f"{ha1}:{self.nonce}:{nc}:{cnonce}:auth:{ha2}")
            fields += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
        else:
            response = h(f"{ha1}:{self.nonce}:{ha2}")
        if self.opaque is not None:
            fields += f', opaque="{self.opaque}"'
        return f'Digest {fields}, response="{response}"'
