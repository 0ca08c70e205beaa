"""The editor's static files: the vendored library matches its record, and every file the
page or a module refers to exists (checks that need no browser)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

WEB = Path(__file__).resolve().parent.parent / "web"


def test_vendored_litegraph_matches_its_version_record():
    record = (WEB / "vendor" / "litegraph" / "VERSION").read_text()
    assert re.search(r"^package: @comfyorg/litegraph$", record, re.M)
    assert re.search(r"^version: \d+\.\d+\.\d+$", record, re.M)
    hashes = dict((name, digest) for digest, name in re.findall(r"^\s+([0-9a-f]{64})\s+(\S+)$", record, re.M))
    assert set(hashes) == {"litegraph.es.js", "litegraph.css", "LICENSE"}
    for name, digest in hashes.items():
        assert hashlib.sha256((WEB / "vendor" / "litegraph" / name).read_bytes()).hexdigest() == digest, name
    assert "MIT" in record and "Permission is hereby granted" in (WEB / "vendor" / "litegraph" / "LICENSE").read_text()


def test_every_referenced_file_exists_and_nothing_comes_from_a_cdn():
    page = (WEB / "index.html").read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "js/main.js" in references
    for reference in references:
        if reference.startswith("data:"):
            continue
        assert "//" not in reference, f"{reference}: the editor must work offline"
        assert (WEB / reference).is_file(), reference
    modules = sorted((WEB / "js").glob("*.js"))
    assert len(modules) > 5
    for module in modules:
        for target in re.findall(r'^\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"', module.read_text(), re.M | re.S):
            assert target.startswith("."), f"{module.name} imports {target}: only relative modules"
            assert (module.parent / target).resolve().is_file(), f"{module.name} imports missing {target}"
        assert len(module.read_text().splitlines()) <= 500, module.name
