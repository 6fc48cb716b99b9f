"""(a) The original service's README client calls, written the way its users wrote them.

`test_upload_public_keys_as_file_part_then_download` spells out the seed README's `requests` calls
verbatim (and `test_public_key_readme_call` its public-key call); the other tests make the same
calls through interop.py's helpers (`fetch_public_key`, `post_upload`, `upload`, `download`). The
assertions are what such a client would notice: status
codes, JSON bodies, the bytes that come back and the download headers.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests

from interop import CONTAINER, HTTP_TIMEOUT, download, fetch_public_key, post_upload, upload

TEXT = "Patient notes, ünïcödé, line 1\nline 2\n".encode("utf-8")


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_text_download(response: requests.Response, name: str) -> None:
    assert response.status_code == 200, response.text
    assert response.content == TEXT
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Disposition"] == f"attachment; filename={name}"


def test_public_key_readme_call(url, headers, proxy):
    public_key = requests.get(f"{url}/key/public", headers=headers, timeout=HTTP_TIMEOUT).json()["public_key"]
    assert public_key.startswith("-----BEGIN PUBLIC KEY-----")
    # Byte for byte the key file (read without newline translation).
    assert public_key.strip() == (proxy.keydir / "rsa_public_key.pem").read_bytes().decode("ascii").strip()


def test_upload_public_keys_as_file_part_then_download(url, headers, tmp_path, blob_name):
    """The seed README's own example sends `public-keys` as a file part (the original: 422)."""
    container = CONTAINER
    name = blob_name(".txt")
    path = _write(tmp_path, "notes.txt", TEXT)
    public_key = requests.get(f"{url}/key/public", headers=headers, timeout=HTTP_TIMEOUT).json()["public_key"]

    with open(path, "rb") as f:
        response = requests.post(
            f"{url}/upload/{container}/{name}",
            headers=headers,
            files={"file": f, "public-keys": json.dumps({"me": public_key})},
            timeout=HTTP_TIMEOUT,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == name
    assert body["file_name"] == name
    assert set(body["decryption_keys"]) == {"me"}
    assert body["keys"] == body["decryption_keys"]
    wrapped = body["decryption_keys"]["me"]
    base64.b64decode(wrapped, validate=True)  # standard base64 with padding

    response = requests.get(
        f"{url}/download/{container}/{name}",
        headers=headers,
        data={"decryption-key": wrapped},
        timeout=HTTP_TIMEOUT,
    )
    _assert_text_download(response, name)

    # The same wrapped key in the x-blob-key header instead of the form field.
    _assert_text_download(download(url, headers, container, name, wrapped, by="header"), name)


def test_upload_with_data_fields_and_overwrite(url, headers, tmp_path, blob_name):
    """`public-keys` and `overwrite` as ordinary form fields (`data=`), the file in `files=`."""
    name = blob_name(".txt")
    public_key = fetch_public_key(url, headers)
    first = _write(tmp_path, "first.txt", b"first version\n")
    second = _write(tmp_path, "second.txt", b"second version, a little longer\n")

    response = post_upload(url, headers, CONTAINER, name, first, public_key, as_form_fields=True, overwrite="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == body["file_name"] == name
    assert body["keys"] == body["decryption_keys"]
    first_key = body["decryption_keys"]["me"]

    # overwrite=true replaces the existing blob.
    second_key = upload(url, headers, CONTAINER, name, second, public_key, as_form_fields=True, overwrite="true")

    response = download(url, headers, CONTAINER, name, second_key)
    assert response.status_code == 200, response.text
    assert response.content == b"second version, a little longer\n"

    # The first upload's key must not reveal the replacement as if it were the first file.
    response = download(url, headers, CONTAINER, name, first_key)
    if response.status_code == 200:  # static data key mode would make both keys open it
        assert response.content == b"second version, a little longer\n"
    else:
        assert response.status_code in (400, 403), response.text
        assert "detail" in response.json()


@pytest.mark.parametrize("overwrite", [None, "false"], ids=["overwrite-absent", "overwrite-false"])
def test_existing_blob_without_overwrite_is_409(url, headers, tmp_path, blob_name, proxy, overwrite):
    name = blob_name(".txt")
    public_key = fetch_public_key(url, headers)
    original = _write(tmp_path, "original.txt", b"keep me\n")
    intruder = _write(tmp_path, "intruder.txt", b"must not replace\n")

    wrapped = upload(url, headers, CONTAINER, name, original, public_key)
    stored_before = proxy.blob_path(name).read_bytes()

    fields = {} if overwrite is None else {"overwrite": overwrite}
    response = post_upload(url, headers, CONTAINER, name, intruder, public_key, as_form_fields=True, **fields)
    assert response.status_code == 409, response.text
    assert response.json() == {"detail": "Blob already exists"}

    assert proxy.blob_path(name).read_bytes() == stored_before
    response = download(url, headers, CONTAINER, name, wrapped)
    assert response.status_code == 200, response.text
    assert response.content == b"keep me\n"


def _wrong_credentials(headers: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    other_key = "DqjwgpzE-80sei5DxZ2AYq8o7IbkuwubeeChAKbeCRs="
    cases = [
        ("wrong-comparison-key", {**headers, "x-comparison-key": other_key}),
        ("wrong-decryption-key", {**headers, "x-decryption-key": other_key}),
        ("wrong-salt", {**headers, "x-salt": "00" * 16}),
        ("empty-comparison-key", {**headers, "x-comparison-key": ""}),
        ("no-credentials", {}),
    ]
    for missing in ("x-decryption-key", "x-salt", "x-comparison-key"):
        cases.append((f"missing-{missing}", {k: v for k, v in headers.items() if k != missing}))
    return cases


def test_wrong_credentials_are_401_everywhere(url, headers, tmp_path, blob_name, proxy):
    name = blob_name(".txt")
    public_key = fetch_public_key(url, headers)
    path = _write(tmp_path, "secret.txt", b"top secret\n")
    wrapped = upload(url, headers, CONTAINER, name, path, public_key)
    unauth = {"detail": "Authentication failed"}

    for label, bad in _wrong_credentials(headers):
        response = requests.get(f"{url}/key/public", headers=bad, timeout=HTTP_TIMEOUT)
        assert (response.status_code, response.json()) == (401, unauth), f"/key/public, {label}"

        response = download(url, bad, CONTAINER, name, wrapped)
        assert (response.status_code, response.json()) == (401, unauth), f"download, {label}"
        assert b"top secret" not in response.content

        response = download(url, bad, CONTAINER, name, wrapped, by="header")
        assert (response.status_code, response.json()) == (401, unauth), f"download x-blob-key, {label}"

        new_name = blob_name(".txt")
        response = post_upload(url, bad, CONTAINER, new_name, path, public_key)
        assert (response.status_code, response.json()) == (401, unauth), f"upload, {label}"
        assert not proxy.blob_path(new_name).exists(), f"upload with {label} stored a blob"
