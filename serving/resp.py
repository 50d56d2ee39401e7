"""Redis's protocol (RESP) for commands assembled from prepared pieces: pure, no I/O.

A long command built from pieces prepared once (the artwork assignments of a served page) is
joined as bytes instead of having every argument packed again on each request.
"""

from __future__ import annotations


def bulk_string(value: bytes) -> bytes:
    """``value`` as a bulk string of Redis's protocol (one argument of a command).

    >>> bulk_string(b"HSET")
    b'$4\\r\\nHSET\\r\\n'
    """
    return b"$%d\r\n%s\r\n" % (len(value), value)


def command_header(count: int, name: bytes) -> bytes:
    """The start of a command of ``count`` arguments (its name included) in Redis's
    protocol; the arguments after the name follow as :func:`bulk_string` values.

    >>> command_header(2, b"GET") + bulk_string(b"k") == b"*2\\r\\n$3\\r\\nGET\\r\\n$1\\r\\nk\\r\\n"
    True
    """
    return b"*%d\r\n%s" % (count, bulk_string(name))
