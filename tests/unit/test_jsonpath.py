import pytest

from processor.adapters.jsonpath import PathError, compile_path

DOC = {"detail": {"conversation_id": "c1", "items": [{"v": 1}, {"v": 2}], "odd key": True}}


@pytest.mark.parametrize("path, value", [
    ("$", DOC),
    ("$.detail.conversation_id", "c1"),
    ("$.detail.items[1].v", 2),
    ("$.detail.items[-1].v", 2),
    ("$['detail']['odd key']", True),
    ('$["detail"].conversation_id', "c1"),
    ("$.detail.missing", None),
    ("$.detail.items[5]", None),
    ("$.detail.conversation_id.deeper", None),
])
def test_paths_find_values_or_none(path, value):
    assert compile_path(path)(DOC) == value


@pytest.mark.parametrize("path", ["detail.x", "$.a[*]", "$..a", "$.a[?(@.b)]"])
def test_unsupported_paths_fail_when_compiled(path):
    with pytest.raises(PathError):
        compile_path(path)
