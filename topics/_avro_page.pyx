# cython: language_level=3, boundscheck=False, wraparound=False
"""A page row's items in Avro, compiled: the array block of ``homestream.PageUpdate``'s
``items`` (its count, then each item's ``title_id``, ``artwork_id`` and ``score``), the
bytes :func:`topics.avro_bytes.items_block_py` (the reference) and fastavro write.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.string cimport memcpy


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL
    int PyFloat_Pack8(double x, char* p, int le) except -1


cdef inline Py_ssize_t _varint_size(long long value) noexcept:
    cdef unsigned long long n = ((<unsigned long long>value) << 1) ^ (
        <unsigned long long>(value >> 63))
    cdef Py_ssize_t k = 1
    while n & ~(<unsigned long long>0x7F):
        n >>= 7
        k += 1
    return k


cdef inline Py_ssize_t _varint(char* out, long long value) noexcept:
    """Avro's zig-zag base-128 varint of ``value`` at ``out``; returns its length."""
    cdef unsigned long long n = ((<unsigned long long>value) << 1) ^ (
        <unsigned long long>(value >> 63))
    cdef Py_ssize_t k = 0
    while n & ~(<unsigned long long>0x7F):
        out[k] = <char>((n & 0x7F) | 0x80)
        n >>= 7
        k += 1
    out[k] = <char>n
    return k + 1


def items_block(list items) -> bytes:
    """The Avro array block of ``items`` (dicts with ``title_id``, ``artwork_id`` and
    ``score``), without the array's closing zero."""
    cdef Py_ssize_t n = len(items), size, k, at
    cdef const char* text
    cdef Py_ssize_t length
    cdef char* out
    size = _varint_size(n)
    for k in range(n):
        item = items[k]
        PyUnicode_AsUTF8AndSize(item["title_id"], &length)
        size += _varint_size(length) + length
        PyUnicode_AsUTF8AndSize(item["artwork_id"], &length)
        size += _varint_size(length) + length + 8
    block = PyBytes_FromStringAndSize(NULL, size)
    out = PyBytes_AS_STRING(block)
    at = _varint(out, n)
    for k in range(n):
        item = items[k]
        for field in ("title_id", "artwork_id"):
            text = PyUnicode_AsUTF8AndSize(item[field], &length)
            at += _varint(out + at, length)
            memcpy(out + at, text, length)
            at += length
        PyFloat_Pack8(item["score"], out + at, 1)
        at += 8
    return block
