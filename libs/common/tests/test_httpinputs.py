"""The shared request readers: what each refuses and with which message."""

from __future__ import annotations

import pytest
from fastapi import Request

from roomcast.common.httpinputs import MAX_AUTHORIZATION_LENGTH, bearer_token, int_query_param


class Refused(Exception):
    pass


def request(query: bytes = b"", authorization: str | None = None) -> Request:
    headers = [] if authorization is None else [(b"authorization", authorization.encode())]
    return Request({"type": "http", "query_string": query, "headers": headers})


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer  abc ", "abc"),
        (None, None),
        ("Basic abc", None),
        ("Bearer ", None),
        ("Bearer " + "x" * MAX_AUTHORIZATION_LENGTH, None),
    ],
)
def test_bearer_token(header: str | None, token: str | None) -> None:
    assert bearer_token(request(authorization=header)) == token


@pytest.mark.parametrize(
    ("query", "value"), [(b"", None), (b"limit=1", 1), (b"limit=100", 100), (b"other=5", None)]
)
def test_int_query_param_accepts(query: bytes, value: int | None) -> None:
    assert int_query_param(request(query), "limit", low=1, high=100, error=Refused) == value


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"limit=0", "limit: must be an integer from 1 to 100"),
        (b"limit=101", "limit: must be an integer from 1 to 100"),
        (b"limit=-1", "limit: must be an integer from 1 to 100"),
        (b"limit=1e3", "limit: must be an integer from 1 to 100"),
        (b"limit=%D9%A3", "limit: must be an integer from 1 to 100"),  # Arabic-Indic 3
        (b"limit=" + b"9" * 21, "limit: must be an integer from 1 to 100"),
        (b"limit=1&limit=2", "limit: give it once"),
    ],
)
def test_int_query_param_refuses(query: bytes, message: str) -> None:
    with pytest.raises(Refused, match=message):
        int_query_param(request(query), "limit", low=1, high=100, error=Refused)
