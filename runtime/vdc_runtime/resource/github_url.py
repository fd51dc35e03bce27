"""A GitHub repository's or organisation's web URL, parsed once for the spec and the
operator: what `kubectl apply` admits is exactly what the operator can register at."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from vdc_runtime.spec import strings

GITHUB_COM = "github.com"
GITHUB_COM_API = "https://api.github.com"
GHES_API_PATH = "/api/v3"

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


_PARTS = re.compile(
    rf"{strings.GITHUB_SCHEME}(?P<host>{strings.GITHUB_HOST})(?::(?P<port>{strings.GITHUB_PORT}))?"
    rf"/(?P<owner>{strings.GITHUB_OWNER})(?:/(?P<repo>{strings.GITHUB_REPO}))?/?"
)


def parse_github_url(url: str) -> GitHubURL:
    """The API and web URLs of a repository or organisation; ValueError says what is wrong.
    What it accepts is exactly `strings.GITHUB_URL`, the CRD's rule."""
    parts = _PARTS.fullmatch(url) if strings.GITHUB_URL.accepts(url) else None
    if parts is None:
        raise ValueError(_why(url))
    owner, host, port = parts["owner"], parts["host"].lower(), parts["port"]
    # A clone URL is what people copy most often; it names the same repository.
    repo = parts["repo"].removesuffix(".git") if parts["repo"] else None
    netloc = host if port is None else f"{host}:{int(port)}"  # an IPv6 host keeps its []
    path = f"/{owner}/{repo}" if repo else f"/{owner}"
    if host in (GITHUB_COM, f"www.{GITHUB_COM}") and port is None:
        return GitHubURL(GITHUB_COM_API, owner, repo, f"https://{GITHUB_COM}{path}")
    return GitHubURL(f"https://{netloc}{GHES_API_PATH}", owner, repo, f"https://{netloc}{path}")


def _why(url: str) -> str:
    """What is wrong with a URL the rule refuses, as precisely as can be told."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError as exc:
        return f"{url!r} is not a valid URL ({exc}); {URL_HELP}"
    if parts.scheme != "https":
        return f"{url!r} is not an https URL; {URL_HELP}"
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return f"{url!r} has no host or carries credentials; {URL_HELP}"
    if parts.query or parts.fragment:
        return f"{url!r} has a query or fragment; {URL_HELP}"
    if parts.hostname == "api.github.com":
        return f"{url!r} is an API URL, not a web URL; {URL_HELP}"
    segments = parts.path.strip("/").split("/") if parts.path.strip("/") else []
    if not segments:
        return f"{url!r} names no owner; {URL_HELP}"
    if len(segments) > 2:
        return f"{url!r} has a path beyond OWNER/REPO; {URL_HELP}"
    if not re.fullmatch(strings.GITHUB_OWNER, segments[0]):
        return f"{url!r}: {segments[0]!r} is not a GitHub owner name; {URL_HELP}"
    if len(segments) == 2:
        return f"{url!r}: {segments[1]!r} is not a repository name; {URL_HELP}"
    return f"{url!r} is not a GitHub web URL; {URL_HELP}"
