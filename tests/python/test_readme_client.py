"""(a) The original service's README client calls, written the way its users wrote them.

Every call here is plain `requests` as in the seed README; the assertions are what such a client
would notice: status codes, JSON bodies, the bytes that come back and the download headers.
"""

from __future__ import annotations

import base64
import json

import pytest
import requests

from interop import CONTAINER, HTTP_TIMEOUT

TEXT = "Patient notes, ünïcödé, line 1\nline 2\n".encode("utf-8")


def _write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


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
    assert response.status_code == 200, response.text
    assert response.content == TEXT
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Disposition"] == f"attachment; filename={name}"

    # The same wrapped key in the x-blob-key header instead of the form field.
    response = requests.get(
        f"{url}/download/{container}/{name}",
        headers={**headers, "x-blob-key": wrapped},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.content == TEXT
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Content-Disposition"] == f"attachment; filename={name}"


def test_upload_with_data_fields_and_overwrite(url, headers, tmp_path, blob_name):
    """`public-keys` and `overwrite` as ordinary form fields (`data=`), the file in `files=`."""
    container = CONTAINER
    name = blob_name(".txt")
    public_key = requests.get(f"{url}/key/public", headers=headers, timeout=HTTP_TIMEOUT).json()["public_key"]
    first = _write(tmp_path, "first.txt", b"first version\n")
    second = _write(tmp_path, "second.txt", b"second version, a little longer\n")

    with open(first, "rb") as f:
        response = requests.post(
            f"{url}/upload/{container}/{name}",
            headers=headers,
            data={"public-keys": json.dumps({"me": public_key}), "overwrite": "true"},
            files={"file": f},
            timeout=HTTP_TIMEOUT,
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["filename"] == body["file_name"] == name
    assert body["keys"] == body["decryption_keys"]
    first_key = body["decryption_keys"]["me"]

    # overwrite=true replaces the existing blob.
    with open(second, "rb") as f:
        response = requests.post(
            f"{url}/upload/{container}/{name}",
            headers=headers,
            data={"public-keys": json.dumps({"me": public_key}), "overwrite": "true"},
            files={"file": f},
            timeout=HTTP_TIMEOUT,
        )
    assert response.status_code == 200, response.text
    second_key = response.json()["decryption_keys"]["me"]

    response = requests.get(
        f"{url}/download/{container}/{name}",
        headers=headers,
        data={"decryption-key": second_key},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 200, response.text
    assert response.content == b"second version, a little longer\n"

    # The first upload's key must not reveal the replacement as if it were the first file.
    response = requests.get(
        f"{url}/download/{container}/{name}",
        headers=headers,
        data={"decryption-key": first_key},
        timeout=HTTP_TIMEOUT,
    )
    if response.status_code == 200:  # static data key mode would make both keys open it
        assert response.content == b"second version, a little longer\n"
    else:
        assert response.status_code in (400, 403), response.text
        assert "detail" in response.json()


@pytest.mark.parametrize("overwrite", [None, "false"], ids=["overwrite-absent", "overwrite-false"])
def test_existing_blob_without_overwrite_is_409(url, headers, tmp_path, blob_name, proxy, overwrite):
    container = CONTAINER
    name = blob_name(".txt")
    public_key = requests.get(f"{url}/key/public", headers=headers, timeout=HTTP_TIMEOUT).json()["public_key"]
    original = _write(tmp_path, "original.txt", b"keep me\n")
    intruder = _write(tmp_path, "intruder.txt", b"must not replace\n")

    with open(original, "rb") as f:
        response = requests.post(
            f"{url}/upload/{container}/{name}",
            headers=headers,
            files={"file": f, "public-keys": json.dumps({"me": public_key})},
            timeout=HTTP_TIMEOUT,
        )
    assert response.status_code == 200, response.text
    wrapped = response.json()["decryption_keys"]["me"]
    stored_before = proxy.blob_path(name).read_bytes()

    data = {"public-keys": json.dumps({"me": public_key})}
    if overwrite is not None:
        data["overwrite"] = overwrite
    with open(intruder, "rb") as f:
        response = requests.post(
            f"{url}/upload/{container}/{name}",
            headers=headers,
            data=data,
            files={"file": f},
            timeout=HTTP_TIMEOUT,
        )
    assert response.status_code == 409, response.text
    assert response.json() == {"detail": "Blob already exists"}

    assert proxy.blob_path(name).read_bytes() == stored_before
    response = requests.get(
        f"{url}/download/{container}/{name}",
        headers=headers,
        data={"decryption-key": wrapped},
        timeout=HTTP_TIMEOUT,
    )
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
    container = CONTAINER
    name = blob_name(".txt")
    public_key = requests.get(f"{url}/key/public", headers=headers, timeout=HTTP_TIMEOUT).json()["public_key"]
    path = _write(tmp_path, "secret.txt", b"top secret\n")
    with open(path, "rb") as f:
        response = requests.post(
            f"{url}/upload/{container}/{name}",
            headers=headers,
            files={"file": f, "public-keys": json.dumps({"me": public_key})},
            timeout=HTTP_TIMEOUT,
        )
    assert response.status_code == 200, response.text
    wrapped = response.json()["decryption_keys"]["me"]
    unauth = {"detail": "Authentication failed"}

    for label, bad in _wrong_credentials(headers):
        response = requests.get(f"{url}/key/public", headers=bad, timeout=HTTP_TIMEOUT)
        assert (response.status_code, response.json()) == (401, unauth), f"/key/public, {label}"

        response = requests.get(
            f"{url}/download/{container}/{name}",
            headers=bad,
            data={"decryption-key": wrapped},
            timeout=HTTP_TIMEOUT,
        )
        assert (response.status_code, response.json()) == (401, unauth), f"download, {label}"
        assert b"top secret" not in response.content

        response = requests.get(
            f"{url}/download/{container}/{name}",
            headers={**bad, "x-blob-key": wrapped},
            timeout=HTTP_TIMEOUT,
        )
        assert (response.status_code, response.json()) == (401, unauth), f"download x-blob-key, {label}"

        new_name = blob_name(".txt")
        with open(path, "rb") as f:
            response = requests.post(
                f"{url}/upload/{container}/{new_name}",
                headers=bad,
                files={"file": f, "public-keys": json.dumps({"me": public_key})},
                timeout=HTTP_TIMEOUT,
            )
        assert (response.status_code, response.json()) == (401, unauth), f"upload, {label}"
        assert not proxy.blob_path(new_name).exists(), f"upload with {label} stored a blob"
