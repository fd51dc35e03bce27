"""A GitHub repository's or organisation's web URL, parsed once for the spec and the
operator: what `kubectl apply` admits is exactly what the operator can register at."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

GITHUB_COM = "github.com"
GITHUB_COM_API = "https://api.github.com"
GHES_API_PATH = "/api/v3"

_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_REPO = re.compile(r"[A-Za-z0-9_.-]+")
URL_HELP = (
    "give https://github.com/OWNER/REPO, https://github.com/ORG, or for GitHub Enterprise "
    "Server https://HOST[:PORT]/OWNER[/REPO]"
)


@dataclass(frozen=True)
class GitHubURL:
    api_url: str
    owner: str
    repo: str | None
    html_url: str


def parse_github_url(url: str) -> GitHubURL:
    """The API and web URLs of a repository or organisation; ValueError says what is wrong."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a valid URL ({exc}); {URL_HELP}") from None
    if parts.scheme != "https":
        raise ValueError(f"{url!r} is not an https URL; {URL_HELP}")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r} has no host or carries credentials; {URL_HELP}")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r} has a query or fragment; {URL_HELP}")
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not segments:
        raise ValueError(f"{url!r} names no owner; {URL_HELP}")
    if len(segments) > 2:
        raise ValueError(f"{url!r} has a path beyond OWNER/REPO; {URL_HELP}")
    owner = segments[0]
    # A clone URL is what people copy most often; it names the same repository.
    repo = segments[1].removesuffix(".git") if len(segments) == 2 else None
    if not _OWNER.fullmatch(owner):
        raise ValueError(f"{url!r}: {owner!r} is not a GitHub owner name; {URL_HELP}")
    if repo is not None and (not _REPO.fullmatch(repo) or repo in (".", "..")):
        raise ValueError(f"{url!r}: {repo!r} is not a repository name; {URL_HELP}")
    host = parts.hostname.lower()
    if host == "api.github.com":
        raise ValueError(f"{url!r} is an API URL, not a web URL; {URL_HELP}")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path = f"/{owner}/{repo}" if repo else f"/{owner}"
    if host in (GITHUB_COM, f"www.{GITHUB_COM}") and port is None:
        return GitHubURL(GITHUB_COM_API, owner, repo, f"https://{GITHUB_COM}{path}")
    return GitHubURL(f"https://{netloc}{GHES_API_PATH}", owner, repo, f"https://{netloc}{path}")
