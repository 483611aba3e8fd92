"""EC2 instance identity from IMDSv2, with short timeouts, so the daemon starts as fast off EC2.

IMDSv2: PUT /latest/api/token (header X-aws-ec2-metadata-token-ttl-seconds) then GETs with
X-aws-ec2-metadata-token. Off EC2 the link-local address does not answer: the token request
times out after `timeout` seconds and nothing else is tried. Proxies from the environment are
bypassed (IMDS is link-local; a proxy would answer for it or hang). Honours
AWS_EC2_METADATA_DISABLED=true, as the AWS SDKs do. Values are validated before use: they
become CloudWatch dimension values.

Standard library only.
"""
from __future__ import annotations

import logging
import os
import re
import urllib.error
import urllib.request
from typing import Callable, Dict, Mapping, Optional

log = logging.getLogger("efajob.imds")

IMDS_URL = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 60
DEFAULT_TIMEOUT = 0.5
PATHS = {
    "instance_id": "instance-id",
    "instance_type": "instance-type",
    "region": "placement/region",
}
VALID = {
    "instance_id": re.compile(r"^i-[0-9a-f]{8,17}\Z"),
    "instance_type": re.compile(r"^[a-z0-9][a-z0-9.-]{1,40}\Z"),
    "region": re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}\Z"),
}

Opener = Callable[[urllib.request.Request, float], bytes]


def _default_opener() -> Opener:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def open_(req: urllib.request.Request, timeout: float) -> bytes:
        with opener.open(req, timeout=timeout) as resp:
            return resp.read(4096)

    return open_


def fetch_identity(base_url: str = IMDS_URL, *, timeout: float = DEFAULT_TIMEOUT,
                   opener: Optional[Opener] = None,
                   env: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """{"instance_id", "instance_type", "region"} as far as IMDSv2 answers; {} off EC2.
    Never raises: any failure is logged at debug level and leaves the key out."""
    env = os.environ if env is None else env
    if env.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return {}
    open_ = opener or _default_opener()
    base = base_url.rstrip("/")
    try:
        token = open_(urllib.request.Request(
            base + "/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)}), timeout)
    except (OSError, urllib.error.URLError, ValueError) as e:
        log.debug("IMDSv2 token request to %s failed: %s (not on EC2?)", base, e)
        return {}
    out: Dict[str, str] = {}
    for key, path in PATHS.items():
        try:
            raw = open_(urllib.request.Request(
                base + "/latest/meta-data/" + path,
                headers={"X-aws-ec2-metadata-token": token.decode("ascii", "replace").strip()}),
                timeout)
        except (OSError, urllib.error.URLError, ValueError) as e:
            log.debug("IMDS %s failed: %s", path, e)
            continue
        value = raw.decode("ascii", "replace").strip()
        if VALID[key].match(value):
            out[key] = value
        else:
            log.warning("IMDS %s returned an unexpected value %r: ignored", path, value[:64])
    return out
