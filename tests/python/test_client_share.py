"""`Client.share`: a blob uploaded for one proxy is re-shared to a second proxy (own keys and
credentials, same storage), whose user then downloads it; the blob itself is not rewritten."""

from __future__ import annotations

import pytest

from blobprox_client import NotFoundError, WrongKeyError

from client_helpers import client_for
from interop import CONTAINER, start_blobprox_made_proxy

DATA = b"shared lab results\n" * 1000


@pytest.fixture(scope="module")
def second_proxy(launcher, tmp_path_factory, stream_proxy):
    """Another collaborator's proxy: its own key pair and credentials, the same storage."""
    return start_blobprox_made_proxy(
        launcher,
        tmp_path_factory,
        "blobprox-second",
        extra_env={"BLOB_FORMAT": "stream", "STORAGE_URL": stream_proxy.datadir.as_uri()},
    )


def test_share_to_a_second_proxy(stream_proxy, second_proxy, blob_name):
    name = f"shared/{blob_name('.txt')}"
    with client_for(stream_proxy) as mine, client_for(second_proxy) as theirs:
        key = mine.upload(CONTAINER, name, DATA, {"me": stream_proxy.public_key_pem()})["me"]
        stored = stream_proxy.blob_path(name).read_bytes()
        with pytest.raises(WrongKeyError):
            theirs.download(CONTAINER, name, key)  # wrapped for the first proxy only

        shared = mine.share(CONTAINER, name, key, {"them": theirs.public_key()})
        assert set(shared) == {"them"}
        assert theirs.download(CONTAINER, name, shared["them"]) == DATA
        assert stream_proxy.blob_path(name).read_bytes() == stored, "share rewrote the blob"


def test_share_errors(stream_proxy, second_proxy, blob_name):
    name, other = blob_name(), blob_name()
    me = {"me": stream_proxy.public_key_pem()}
    with client_for(stream_proxy) as client:
        client.upload(CONTAINER, name, DATA, me)
        other_key = client.upload(CONTAINER, other, b"other", me)["me"]
        them = {"them": second_proxy.public_key_pem()}
        with pytest.raises(NotFoundError) as caught:
            client.share(CONTAINER, blob_name(), other_key, them)
        assert caught.value.detail == "Blob not found"
        with pytest.raises(WrongKeyError):
            client.share(CONTAINER, name, other_key, them)
