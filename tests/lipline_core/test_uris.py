import json
import os
from pathlib import Path

from lipline.uris import local_path, path_to_uri, publish, to_path


def test_names_that_are_not_utf8_travel_as_percent_encoded_file_uris(tmp_path):
    raw = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/clip \xff\xfe%41.mp4"))
    raw.write_bytes(b"x")
    uri = path_to_uri(raw)
    assert uri.startswith("file://") and json.dumps(uri)  # JSON-safe, unlike the surrogate-escaped str
    assert to_path(uri) == raw and to_path(uri).read_bytes() == b"x"


def test_plain_names_stay_paths_and_publish_copies(tmp_path):
    src = tmp_path / "a b 'c' $d;.txt"
    src.write_text("hi")
    assert path_to_uri(src) == str(src)
    assert local_path(str(src), tmp_path) == src
    dest = publish(src, str(tmp_path / "out" / "copy.txt"))
    assert Path(dest).read_text() == "hi"
