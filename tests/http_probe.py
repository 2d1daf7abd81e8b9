"""GETs of a worker's health and metrics port from a test, and bounded waits on them."""

import time
import urllib.error
import urllib.request


def get(url: str) -> tuple[int | None, str]:
    """The status and body of GET ``url``; ``(None, why)`` if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return None, str(error)


def wait_for_status(url: str, status: int, timeout: float = 30.0) -> tuple[int | None, str]:
    """Poll ``url`` (bounded) until it answers ``status``; that answer."""
    deadline = time.monotonic() + timeout
    while (got := get(url))[0] != status:
        assert time.monotonic() < deadline, f"{url} still answers {got} after {timeout}s"
        time.sleep(0.05)
    return got
