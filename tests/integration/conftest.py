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


def only(body: dict) -> str:
    """The one image of a FLUX prediction: its output is a list of images (num_outputs), here of one."""
    assert isinstance(body["output"], list) and len(body["output"]) == 1, str(body["output"])[:200]
    return body["output"][0]


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


def huge_png_uri(folder) -> str:
    """A 12000x12000 RGB PNG of a few hundred KB (thin stripes), as a data URI: the hostile input that once
    grew a worker by gigabytes."""
    import numpy as np

    stripes = np.zeros((12000, 12000, 3), np.uint8)
    stripes[::7, ::5] = 200
    path = folder / "huge.png"
    Image.fromarray(stripes).save(path, optimize=True)
    return to_data_uri(path)


def worker_rss_mb(server) -> float:
    """Resident memory of a Cog server's worker processes (where the model runs), in MB."""
    import psutil

    return sum(p.memory_info().rss for p in psutil.Process(server.proc.pid).children(recursive=True)) / 2**20
