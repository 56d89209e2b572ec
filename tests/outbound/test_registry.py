from pathlib import Path

import pytest

from bridge.outbound.registry import DndRegistry, RegistryFormatError, parse_preferences

from .support import ALICE, BOB, CAROL


@pytest.fixture
def registry(tmp_path: Path):
    reg = DndRegistry.open(tmp_path)
    yield reg
    reg.close()


def test_plain_list_without_header_is_fully_blocked(registry: DndRegistry) -> None:
    report = registry.import_text("9876543210\n+91 98123 45678\n\n# comment\n")
    assert (report.rows, report.imported, report.invalid) == (2, 2, 0)
    entry = registry.lookup(ALICE)
    assert entry is not None and entry.fully_blocked and entry.blocks(3)
    assert registry.lookup(CAROL) is None


def test_header_with_preferences(registry: DndRegistry) -> None:
    text = "msisdn,allowed_categories\n9876543210,1|3\n9812345678,0\n7012345678,\n"
    registry.import_text(text)
    alice = registry.lookup(ALICE)
    assert alice is not None and alice.accepts == {1, 3}
    assert not alice.blocks(3) and alice.blocks(2) and alice.blocks(0)  # 0: unspecified blocks
    bob = registry.lookup(BOB)
    carol = registry.lookup(CAROL)
    assert bob is not None and bob.fully_blocked
    assert carol is not None and carol.fully_blocked


def test_bad_rows_counted_by_line_never_crash(registry: DndRegistry) -> None:
    report = registry.import_text("number,categories\n9876543210,1\nhello,\n12,\n9812345678,9\n")
    assert report.imported == 1
    assert report.invalid == 3
    assert report.invalid_lines == [3, 4, 5]


def test_header_without_number_column_is_a_clear_error(registry: DndRegistry) -> None:
    with pytest.raises(RegistryFormatError, match="number column"):
        registry.import_text("name,city\nx,y\n")


def test_binary_file_is_a_clear_error(registry: DndRegistry, tmp_path: Path) -> None:
    path = tmp_path / "scrub.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(RegistryFormatError, match="UTF-8"):
        registry.import_file(path)


def test_replace_drops_numbers_not_in_the_new_snapshot(registry: DndRegistry) -> None:
    registry.import_text("9876543210\n9812345678\n")
    registry.import_text("7012345678\n")
    assert registry.count() == 3
    registry.import_text("7012345678\n", replace=True)
    assert registry.count() == 1
    assert registry.lookup(ALICE) is None and registry.lookup(CAROL) is not None


def test_reimport_updates_preferences(registry: DndRegistry) -> None:
    registry.import_text("number,preferences\n9876543210,0\n")
    registry.import_text("number,preferences\n9876543210,4\n")
    entry = registry.lookup(ALICE)
    assert entry is not None and entry.accepts == {4}


def test_parse_preferences() -> None:
    assert parse_preferences("") == 0
    assert parse_preferences("0") == 0
    assert parse_preferences("1, 8") == (1 << 1) | (1 << 8)
    with pytest.raises(ValueError):
        parse_preferences("12")
