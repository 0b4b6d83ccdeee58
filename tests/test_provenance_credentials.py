"""No secret of a git remote reaches the run store: `strip_credentials` over URL shapes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from himl_manifest.provenance import gather, strip_credentials

#: A secret: a distinctive marker, then characters a userinfo, a query or a fragment may hold
#: (anything but the authority's delimiters), ``@`` and ``:`` included.
_SECRET_TAIL = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="/?#&="),
    max_size=12,
)
SECRETS = _SECRET_TAIL.map(lambda tail: "SECRETx" + tail)
HOSTS = st.sampled_from(["github.com", "dev.azure.com", "gitlab.example.org:8443", "10.0.0.1"])
PATHS = st.sampled_from(["/o/r.git", "/org/project/_git/repo", "/r", ""])
TOKEN_PARAMS = st.sampled_from(["private_token", "access_token", "token", "sig", "password"])


@st.composite
def secret_urls(draw: st.DrawFn) -> tuple[str, str]:
    """(a remote URL with secrets in it, the host and path that must survive)."""
    scheme = draw(st.sampled_from(["https", "http", "git+https", "ssh", "git+ssh", "ftp"]))
    host, path = draw(HOSTS), draw(PATHS)
    shape = draw(st.sampled_from(["token", "user:token", "user:tok@tok", "none"]))
    user = draw(st.sampled_from(["git", "oauth2", "x-access-token"]))
    if shape == "token" and scheme in {"ssh", "git+ssh"}:
        shape = "user:token"  # an ssh user name is an account, not a secret
    userinfo = {
        "token": draw(SECRETS) + "@",
        "user:token": f"{user}:{draw(SECRETS)}@",
        "user:tok@tok": f"{user}:{draw(SECRETS)}@{draw(SECRETS)}@",
        "none": "",
    }[shape]
    query = ""
    if draw(st.booleans()) or shape == "none":
        params = [f"{draw(TOKEN_PARAMS)}={draw(SECRETS)}"]
        if draw(st.booleans()):
            params.insert(0, "ref=main")
        query = "?" + "&".join(params)
    fragment = "#" + draw(SECRETS) if draw(st.booleans()) else ""
    return f"{scheme}://{userinfo}{host}{path}{query}{fragment}", f"{scheme}://{host}{path}"


@given(secret_urls())
def test_no_secret_survives_any_url_shape(case: tuple[str, str]) -> None:
    url, kept = case
    clean = strip_credentials(url)
    assert "SECRET" not in clean
    assert clean == kept
    assert strip_credentials(clean) == clean  # idempotent


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:tok1@tok2@host/o/r.git", "https://host/o/r.git"),
        ("git+https://TOKEN@host/o/r.git", "git+https://host/o/r.git"),
        ("https://gitlab.com/o/r.git?private_token=glpat-x", "https://gitlab.com/o/r.git"),
        ("https://host/o/r?ref=main&access_token=abc#frag", "https://host/o/r"),
        ("https://tok@host?access_token=z", "https://host"),
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("ssh://git:pw@host/r.git", "ssh://host/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("user:pw@host:o/r.git", "host:o/r.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
        ("file:///srv/git/repo.git", "file:///srv/git/repo.git"),
    ],
)
def test_strip_credentials_shapes(url: str, clean: str) -> None:
    assert strip_credentials(url) == clean


@given(
    user=st.sampled_from(["git", "deploy"]),
    host=st.sampled_from(["github.com", "host.example.org"]),
    path=st.sampled_from(["o/r.git", "org/sub/r", "r"]),
)
def test_scp_like_remotes_are_kept(user: str, host: str, path: str) -> None:
    url = f"{user}@{host}:{path}"
    assert strip_credentials(url) == url


@pytest.mark.parametrize(
    "remote",
    [
        "https://user:SECRETa@SECRETb@example.org/lab/exp.git",
        "git+https://SECRETc@example.org/lab/exp.git",
        "https://example.org/lab/exp.git?private_token=SECRETd#SECRETe",
    ],
)
def test_provenance_of_a_real_repository_holds_no_secret(tmp_path: Path, remote: str) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "researcher@example.org")
    git("config", "user.name", "Researcher")
    git("remote", "add", "origin", remote)
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "a.yaml").write_text("name: a\n", encoding="utf-8")
    git("add", ".")
    git("commit", "-q", "-m", "a")
    facts = gather(tmp_path, ["experiments/a.yaml"])["experiments/a.yaml"].facts
    assert facts["remote_url"].endswith("example.org/lab/exp.git")
    assert "SECRET" not in repr(facts)
