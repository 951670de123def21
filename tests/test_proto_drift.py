"""The committed stubs must be exactly what `python -m mlxrpc.protogen` generates."""

from pathlib import Path

from mlxrpc.protogen import ROOT, generate


def test_generated_stubs_match_the_proto(tmp_path: Path) -> None:
    fresh = generate(tmp_path)
    assert fresh, "protoc generated nothing"
    for path in fresh:
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed.name} drifted from proto/: run `make proto` and commit"
        )
