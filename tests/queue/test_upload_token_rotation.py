"""Store IT rotates the cloud token: the new token file is picked up without a restart."""

import time

from agent_harness import UPLOAD_TOKEN as TOKEN
from agent_harness import enqueue

from agent.queue.uploader import Uploader


def test_a_rotated_token_file_is_read_again_on_401_and_nothing_is_lost(cloud, store, tmp_path):
    token_file = tmp_path / "cloud-token"
    token_file.write_text(TOKEN)
    items = [enqueue(store, "r-0")]
    with Uploader(
        store, cloud.url, lambda: token_file.read_text().strip(), auth_retry_delay=600, workers=1
    ) as uploader:
        assert uploader.run_once(now=2000.0).delivered == 1
        cloud.token = "tok-rotated-Z81"  # the cloud now only takes the new token
        items += [enqueue(store, f"r-{n}", now=2000.0) for n in (1, 2)]
        stats = uploader.run_once(now=2001.0)
        assert stats.auth_failed == 1 and stats.delivered == 0
        token_file.write_text("tok-rotated-Z81\n")  # store IT puts the new one in place
        stats = uploader.run_once(now=time.time() + 700)
        stats = uploader.run_once(now=time.time() + 1400)
    assert cloud.count() == 3
    assert {store.get(i.id).state for i in items} == {"delivered"}


def test_the_recovery_line_is_info_not_a_warning(cloud, store, tmp_path, caplog):
    import logging

    token_file = tmp_path / "cloud-token"
    token_file.write_text("tok-old-A11")
    enqueue(store, "r-9")
    with (
        Uploader(
            store,
            cloud.url,
            lambda: token_file.read_text().strip(),
            auth_retry_delay=600,
            workers=1,
        ) as uploader,
        caplog.at_level(logging.INFO),
    ):
        assert uploader.run_once(now=2000.0).auth_failed == 1
        token_file.write_text(TOKEN)
        uploader.run_once(now=time.time() + 700)  # 401 again: the new token is read
        assert uploader.run_once(now=time.time() + 1400).delivered == 1
    [recovered] = [r for r in caplog.records if "accepts the token again" in r.getMessage()]
    assert recovered.levelno == logging.INFO
