"""No secrets baked into the image: run inside it by .ci/container.sh (as root, so every file
can be read), with the image's configured environment variable names as arguments.

Fails (exit 1, naming each finding) on an environment variable of the image whose name says
key, secret, token or password and has a value; a file whose name is one secrets live in
(.env, *.key, *.p12, id_rsa, .netrc, .pypirc, .git-credentials, docker or pip credentials);
a file holding a private key (public certificates and *.pem CA bundles are fine). Scanned:
the whole root filesystem except the virtual ones and the trees that come from packages (/usr,
/opt/venv, dpkg's records), where public test fixtures could match.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
SECRET_FILES = re.compile(
    r"^(\.env(\..*)?|.*\.key|.*\.p12|id_(rsa|dsa|ecdsa|ed25519)|\.netrc|\.pypirc"
    r"|\.git-credentials|pip\.conf|config\.json)$"
)
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
SKIP = ("/proc", "/sys", "/dev", "/usr", "/opt/venv", "/var/lib/dpkg", "/var/cache")
MAX_BYTES = 1 << 20


def main() -> int:
    findings = []
    for assignment in sys.argv[1:]:
        name, _, value = assignment.partition("=")
        if SECRET_NAME.search(name) and value:
            findings.append(f"environment: {name} has a value in the image")
    scanned = 0
    for root, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if not str(Path(root, d)).startswith(SKIP)]
        for name in files:
            path = Path(root, name)
            if not path.is_file() or path.is_symlink():
                continue
            scanned += 1
            # Docker's own config.json (credentials) only; the model's config.json is data.
            if SECRET_FILES.match(name) and not (name == "config.json" and ".docker" not in root):
                findings.append(f"file: {path} is where secrets are kept")
            try:
                if path.stat().st_size <= MAX_BYTES and PRIVATE_KEY.search(path.read_bytes()):
                    findings.append(f"file: {path} holds a private key")
            except OSError:
                continue
    for finding in findings:
        print(f"  secret in the image? {finding}")
    print(
        f"  secrets scan: {len(sys.argv) - 1} environment variables, {scanned} files: "
        f"{len(findings)} findings"
    )
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
