"""tools/fetch.py finds the source archive in apt's own configuration, on Debian and on
Ubuntu, in the one-line and the deb822 format. Sample files only: no network here (the
download itself is replaced wherever the fetch logic runs)."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest

from tools import fetch

pytestmark = pytest.mark.unit

# Debian 12 container images: deb822, with a comment line inside each stanza.
DEBIAN_12_SOURCES = """\
Types: deb
# http://snapshot.example.org/archive/debian/20250520T000000Z
URIs: http://deb.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.example.org/archive/debian-security/20250520T000000Z
URIs: http://deb.example.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

# Debian 12 from the installer: one-line sources.list, a DVD entry, deb-src lines.
DEBIAN_12_LIST = """\
#deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 DVD Binary-1 20240210-11:28]/ bookworm contrib main non-free-firmware
deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 DVD Binary-1 20240210-11:28]/ bookworm contrib main

deb http://ftp.example.org/debian/ bookworm main non-free-firmware
deb-src http://ftp.example.org/debian/ bookworm main non-free-firmware

deb http://security.example.org/debian-security bookworm-security main non-free-firmware
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://ftp.example.org/debian/ bookworm-updates main  # updates
"""

# Ubuntu 24.04: an empty sources.list and ubuntu.sources in deb822.
UBUNTU_2404_LIST = "# Ubuntu sources have moved to /etc/apt/sources.list.d/ubuntu.sources\n"
UBUNTU_2404_SOURCES = """\
## Types: Binary (deb) or source (deb-src)
## URIs: the archive's URL
Types: deb
URIs: http://archive.example.org/ubuntu/
Suites: noble noble-updates noble-backports
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg

## Ubuntu security updates.
Types: deb
URIs: http://security.example.org/ubuntu/
Suites: noble-security
Components: main restricted universe multiverse
Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg
"""

# Ubuntu up to 22.04 (and 24.04 upgraded from it): one-line, components on separate lines.
UBUNTU_ONE_LINE = """\
deb http://archive.example.org/ubuntu/ noble main restricted
# deb-src http://archive.example.org/ubuntu/ noble main restricted
deb http://archive.example.org/ubuntu/ noble universe
deb http://archive.example.org/ubuntu/ noble-updates universe
deb http://security.example.org/ubuntu/ noble-security main restricted universe
"""

# Third parties' repositories: never asked for Debian's sources.
THIRD_PARTY_SOURCES = """\
Types: deb
URIs: https://repo.example.com/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg
"""
THIRD_PARTY_LIST = "deb https://packages.example.com/apt cloud-sdk-bookworm main\n"

# An embedded key (continuation lines, " ." for a blank line) and a disabled stanza.
DEB822_ODDITIES = """\
Types: deb deb-src
URIs: http://one.example.org/debian http://two.example.org/debian
Suites: bookworm
Components: main contrib
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBFxZ
 -----END PGP PUBLIC KEY BLOCK-----

Enabled: no
Types: deb
URIs: http://off.example.org/debian
Suites: bookworm
Components: main
"""

MICROPYTHON_FILE = "micropython_1.25.0+ds.orig.tar.xz"


def apt_dir(tmp_path: Path, sources_list: str = "", **parts: str) -> Path:
    """An /etc/apt lookalike: sources.list plus sources.list.d files named by keyword."""
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (etc / "sources.list.d" / name.replace("__", ".")).write_text(text)
    return etc


def urls_for(etc: Path, codename: str, package: str = "micropython",
             filename: str = MICROPYTHON_FILE) -> list[str]:
    return fetch.source_urls(package, filename, fetch.apt_sources(etc), codename, override="")


def test_debian_12_deb822(tmp_path):
    etc = apt_dir(tmp_path, debian__sources=DEBIAN_12_SOURCES)
    sources = fetch.apt_sources(etc)
    assert [s.uris for s in sources] == [["http://deb.example.org/debian"],
                                         ["http://deb.example.org/debian-security"]]
    assert sources[0].suites == ["bookworm", "bookworm-updates"]
    assert urls_for(etc, "bookworm") == [
        f"http://deb.example.org/debian/pool/main/m/micropython/{MICROPYTHON_FILE}",
        f"http://deb.example.org/debian-security/pool/main/m/micropython/{MICROPYTHON_FILE}",
    ]


def test_debian_12_one_line(tmp_path):
    etc = apt_dir(tmp_path, DEBIAN_12_LIST)
    sources = fetch.apt_sources(etc)
    assert sources[0].uris[0].startswith("cdrom:[Debian GNU/Linux 12.5.0")
    assert sources[0].suites == ["bookworm"]
    assert sources[-1].components == ["main"]  # options skipped, trailing comment dropped
    assert urls_for(etc, "bookworm", "mbedtls", "mbedtls_3.6.5.orig.tar.bz2") == [
        "http://ftp.example.org/debian/pool/main/m/mbedtls/mbedtls_3.6.5.orig.tar.bz2",
        "http://ftp.example.org/debian/pool/non-free-firmware/m/mbedtls/mbedtls_3.6.5.orig.tar.bz2",
        "http://security.example.org/debian-security/pool/main/m/mbedtls/mbedtls_3.6.5.orig.tar.bz2",
        "http://security.example.org/debian-security/pool/non-free-firmware/m/mbedtls/"
        "mbedtls_3.6.5.orig.tar.bz2",
    ]


def test_ubuntu_2404_deb822_universe_first_after_main(tmp_path):
    etc = apt_dir(tmp_path, UBUNTU_2404_LIST, ubuntu__sources=UBUNTU_2404_SOURCES)
    sources = fetch.apt_sources(etc)
    assert len(sources) == 2
    assert sources[0].components == ["main", "restricted", "universe", "multiverse"]
    urls = urls_for(etc, "noble")
    pool = f"m/micropython/{MICROPYTHON_FILE}"
    assert urls[:4] == [f"http://archive.example.org/ubuntu/pool/{c}/{pool}"
                        for c in ("main", "universe", "restricted", "multiverse")]
    assert all(u.startswith("http://security.example.org/ubuntu/pool/") for u in urls[4:])


def test_ubuntu_one_line(tmp_path):
    etc = apt_dir(tmp_path, UBUNTU_ONE_LINE)
    urls = urls_for(etc, "noble")
    pool = f"m/micropython/{MICROPYTHON_FILE}"
    assert urls == [
        f"http://archive.example.org/ubuntu/pool/main/{pool}",
        f"http://archive.example.org/ubuntu/pool/restricted/{pool}",
        f"http://archive.example.org/ubuntu/pool/universe/{pool}",
        f"http://security.example.org/ubuntu/pool/main/{pool}",
        f"http://security.example.org/ubuntu/pool/universe/{pool}",
        f"http://security.example.org/ubuntu/pool/restricted/{pool}",
    ]


def test_ubuntu_ports_and_a_mirror_named_by_its_suites(tmp_path):
    etc = apt_dir(tmp_path, "deb http://ports.example.org/ubuntu-ports noble universe\n"
                            "deb http://cache.example.org:3142/local noble-updates main\n")
    assert [u.split("/pool/")[0] for u in urls_for(etc, "noble")] == [
        "http://ports.example.org/ubuntu-ports", "http://cache.example.org:3142/local"]


def test_third_party_repositories_are_not_asked(tmp_path):
    etc = apt_dir(tmp_path, THIRD_PARTY_LIST, nodesource__sources=THIRD_PARTY_SOURCES,
                  debian__sources=DEBIAN_12_SOURCES)
    assert {u.split("/pool/")[0] for u in urls_for(etc, "bookworm")} == {
        "http://deb.example.org/debian", "http://deb.example.org/debian-security"}


def test_continuation_lines_disabled_stanzas_and_ignored_file_names(tmp_path):
    etc = apt_dir(tmp_path, extra__sources=DEB822_ODDITIES,
                  old__list__save="deb http://saved.example.org/debian bookworm main\n",
                  disabled__sources__off="URIs: http://off2.example.org/debian\nSuites: bookworm\n")
    sources = fetch.apt_sources(etc)
    assert len(sources) == 1
    assert sources[0].types == ["deb", "deb-src"]
    assert sources[0].components == ["main", "contrib"]
    assert {u.split("/pool/")[0] for u in urls_for(etc, "bookworm")} == {
        "http://one.example.org/debian", "http://two.example.org/debian"}


def test_mirror_file_uris_of_cloud_images(tmp_path):
    mirrors = tmp_path / "debian.list"
    mirrors.write_text("# mirrors\nhttps://cloud.example.org/debian\tpriority:1\n")
    etc = apt_dir(tmp_path, debian__sources=(
        f"Types: deb\nURIs: mirror+file://{mirrors}\nSuites: bookworm\nComponents: main\n"))
    assert urls_for(etc, "bookworm") == [
        f"https://cloud.example.org/debian/pool/main/m/micropython/{MICROPYTHON_FILE}"]


def test_the_variable_overrides_apt(tmp_path, monkeypatch):
    etc = apt_dir(tmp_path, ubuntu__sources=UBUNTU_2404_SOURCES)
    monkeypatch.setenv(fetch.MIRROR_VARIABLE, "http://mine.example.org/debian/")
    assert fetch.source_urls("mbedtls", "mbedtls_3.6.5.orig.tar.bz2", fetch.apt_sources(etc),
                             "noble") == [
        "http://mine.example.org/debian/pool/main/m/mbedtls/mbedtls_3.6.5.orig.tar.bz2"]


def test_codename_from_os_release(tmp_path):
    os_release = tmp_path / "os-release"
    os_release.write_text('NAME="Ubuntu"\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n')
    assert fetch.release_codename(os_release) == "noble"
    assert fetch.release_codename(tmp_path / "missing") == ""


def _not_found(url, dest, sha256, announce=True):
    raise urllib.error.HTTPError(url, 404, "Not Found", None, None)


def test_first_archive_with_the_file_wins(tmp_path, monkeypatch):
    asked = []

    def fake_download(url, dest, sha256, announce=True):
        asked.append(url)
        if "/universe/" not in url:
            _not_found(url, dest, sha256)
        return dest

    monkeypatch.setattr(fetch, "download", fake_download)
    etc = apt_dir(tmp_path, ubuntu__sources=UBUNTU_2404_SOURCES)
    got = fetch.fetch_source(("micropython", MICROPYTHON_FILE), "0" * 64, tmp_path,
                             urls_for(etc, "noble"))
    assert got == tmp_path / "downloads" / MICROPYTHON_FILE
    assert [u.split("/pool/")[1].split("/")[0] for u in asked] == ["main", "universe"]


def test_ubuntu_without_the_upload_asks_for_the_variable(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch, "download", _not_found)
    monkeypatch.delenv(fetch.MIRROR_VARIABLE, raising=False)
    etc = apt_dir(tmp_path, ubuntu__sources=UBUNTU_2404_SOURCES)
    urls = urls_for(etc, "noble")
    with pytest.raises(SystemExit) as stop:
        fetch.fetch_source(("micropython", MICROPYTHON_FILE), "0" * 64, tmp_path, urls)
    message = str(stop.value.code)
    assert f"tried {urls[0]}: HTTP 404" in message
    assert "PICOCHARGE_DEBIAN_MIRROR" in message and "ending in /debian" in message


def test_a_different_file_of_the_same_name_is_not_taken(tmp_path, monkeypatch):
    def mismatch(url, dest, sha256, announce=True):
        raise fetch.ChecksumMismatch("mismatch")

    monkeypatch.setattr(fetch, "download", mismatch)
    with pytest.raises(SystemExit) as stop:
        fetch.fetch_source(("mbedtls", "x.tar.bz2"), "0" * 64, tmp_path, ["http://a.example.org/debian/x"])
    assert "SHA-256 mismatch" in str(stop.value.code)


def test_no_archive_at_all(tmp_path, monkeypatch):
    monkeypatch.delenv(fetch.MIRROR_VARIABLE, raising=False)
    etc = apt_dir(tmp_path, THIRD_PARTY_LIST)
    assert urls_for(etc, "bookworm") == []
    with pytest.raises(SystemExit) as stop:
        fetch.fetch_source(("micropython", MICROPYTHON_FILE), "0" * 64, tmp_path, [])
    assert "name no Debian or Ubuntu archive" in str(stop.value.code)


def _tarball(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:bz2") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o6777
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


@pytest.mark.parametrize("has_filter", [True, False], ids=["data-filter", "debian-12-python"])
def test_unpack_a_source_tarball(tmp_path, monkeypatch, has_filter):
    import tarfile

    if not has_filter:  # Debian 12's python3 (3.11.2) has no extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    tarball = _tarball(tmp_path / "ok.tar.bz2", {"pkg-1.0/README": b"hello", "pkg-1.0/src/a.c": b"int a;"},
                       {"pkg-1.0/link": "src/a.c"})
    fetch.unpack(tarball, tmp_path / "out")
    assert (tmp_path / "out" / "pkg-1.0" / "src" / "a.c").read_bytes() == b"int a;"
    assert (tmp_path / "out" / "pkg-1.0" / "README").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize("members, links", [
    ({"../escape": b"x"}, None),
    ({"/tmp/absolute": b"x"}, None),
    ({}, {"pkg/out": "../../elsewhere"}),
])
def test_unpack_without_filters_refuses_what_leaves_the_directory(tmp_path, monkeypatch, members, links):
    import tarfile

    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    tarball = _tarball(tmp_path / "bad.tar.bz2", members, links)
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit, match="refusing member"):
        fetch.unpack(tarball, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
