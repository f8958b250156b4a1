"""The project tests itself from its own clone: nothing reads ``../shared``."""

import pathlib
import re

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE_DATA = REPO_ROOT / "tests" / "data"

# A reference to the developers' sample folder beside the checkout, in any of
# the spellings a path join or a string can take.
OUTSIDE = re.compile(r"""\.\./shared|parent\s*/\s*["']shared["']|CIML_SHARED_DATA""")


def _project_files():
    for top in ("ciml", "ciml_plugins", "tests", "benchmarks", "doc", ".ci"):
        for path in (REPO_ROOT / top).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".rst", ".cfg", ".ini", ".toml", ""}:
                yield path
    yield from (REPO_ROOT / name for name in ("tox.ini", "setup.cfg", "README.rst"))


def test_no_file_reaches_outside_the_clone():
    here = pathlib.Path(__file__).resolve()
    offenders = [str(p.relative_to(REPO_ROOT)) for p in _project_files()
                 if p.resolve() != here and OUTSIDE.search(p.read_text(errors="replace"))]
    assert offenders == []


def test_every_sample_file_has_a_provenance_row():
    note = (SAMPLE_DATA / "PROVENANCE.md").read_text()
    files = [p.relative_to(SAMPLE_DATA).as_posix() for p in SAMPLE_DATA.rglob("*")
             if p.is_file() and p.name != "PROVENANCE.md"]
    assert files, "tests/data is empty"
    assert [f for f in files if f"`{f}`" not in note] == []
