import io

import pytest
from PIL import Image

from shared.cogserver import from_data_uri, to_data_uri
from shared.catalog import EXAMPLES


def decode_image(uri: str) -> Image.Image:
    assert uri.startswith("data:image/"), uri[:40]
    return Image.open(io.BytesIO(from_data_uri(uri)[1]))


def raw_bytes(uri: str) -> bytes:
    return from_data_uri(uri)[1]


@pytest.fixture(scope="session")
def example_image() -> str:
    return to_data_uri(EXAMPLES / "landscape.png")


def ok(response) -> dict:
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert body["status"] == "succeeded", f"{body.get('error')}\n{body.get('logs', '')[-2000:]}"
    return body


def failed(response) -> dict:
    assert response.status_code == 200, response.text[:500]
    body = response.json()
    assert body["status"] == "failed", body.get("status")
    return body


def rejected(response, field: str) -> str:
    """A 422 from the server's own schema validation that names `field`."""
    assert response.status_code == 422, f"{response.status_code}: {response.text[:300]}"
    detail = response.json()["detail"]
    assert any(d["loc"][-1] == field for d in detail), detail
    return " ".join(d["msg"] for d in detail)
