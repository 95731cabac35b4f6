"""Status files are replaced whole: a reader polling one sees the old text or the new, never part of one."""

import json
import threading
import time

from fedkube.aggregator.history import History
from fedkube.aggregator.status_files import RENAMEAT2, exchange, write_atomic, write_text_atomic


def test_a_new_file_is_created_and_an_existing_one_replaced_without_leftovers(tmp_path):
    path = tmp_path / "status.json"
    write_text_atomic(path, "first")  # nothing to exchange with yet: os.replace
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]


def test_a_crashs_leftover_temporary_file_is_replaced_not_reused(tmp_path):
    path = tmp_path / "metrics.json"
    write_text_atomic(path, "[1]")
    (tmp_path / "metrics.json.tmp").write_text("half of a [")
    write_text_atomic(path, "[1, 2]")
    assert path.read_text() == "[1, 2]" and not (tmp_path / "metrics.json.tmp").exists()


def test_a_history_is_written_from_its_parts(tmp_path):
    history = History([{"round": 1, "bytes_in": 1, "bytes_out": 2}, {"round": 2, "bytes_in": 3, "bytes_out": 4}])
    history.text()  # the first round's text is kept from here on
    history.append({"round": 3, "bytes_in": 5, "bytes_out": 6, "note": "é"})
    write_atomic(tmp_path / "metrics.json", history.parts())
    assert (tmp_path / "metrics.json").read_text() == json.dumps(history)


def test_exchange_swaps_two_files_and_refuses_a_missing_one(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    assert not exchange(a, b)  # b does not exist: nothing changes
    assert a.read_text() == "A" and not b.exists()
    b.write_text("B")
    if RENAMEAT2 is not None:  # Linux with glibc 2.28 or later, as the images are
        assert exchange(a, b)
        assert (a.read_text(), b.read_text()) == ("B", "A")


def test_a_reader_polling_during_rewrites_only_ever_sees_whole_texts(tmp_path):
    path = tmp_path / "status.json"
    texts = [str(n) * (4096 + n) for n in range(10)]  # each longer than a page, each distinct
    write_text_atomic(path, texts[0])
    seen: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    deadline, n = time.monotonic() + 10, 0
    while (len(seen) < 500 or len(set(seen)) < 2) and time.monotonic() < deadline:  # until reads interleave
        n += 1
        write_text_atomic(path, texts[n % len(texts)])
    done.set()
    reader.join()
    assert set(seen) <= set(texts) and len(set(seen)) > 1
