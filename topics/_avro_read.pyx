# cython: language_level=3, boundscheck=False, wraparound=False
"""Avro bodies read in C: the compiled form of :func:`topics.avro_bytes.compile_reader`.

A :class:`Reader` walks a schema's program (:func:`topics.avro_bytes.reader_program`:
nested tuples of an opcode and its arguments) over the bytes, as the Python reader written
for the same schema reads them: the same values, and an error on every input that one
refuses (a truncated body, an index out of range, a varint too long, an array block
carrying its byte size), so the codec lets fastavro read those.
"""

from cpython.dict cimport PyDict_SetItem
from cpython.list cimport PyList_Append
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    object PyUnicode_DecodeUTF8(const char* s, Py_ssize_t size, const char* errors)

# the opcodes of topics.avro_bytes.reader_program (the same numbers)
cdef enum:
    OP_LONG = 0
    OP_INT = 1
    OP_STRING = 2
    OP_DOUBLE = 3
    OP_FLOAT = 4
    OP_BOOLEAN = 5
    OP_NULL = 6
    OP_ENUM = 7
    OP_RECORD = 8
    OP_ARRAY = 9
    OP_UNION = 10


cdef class _Buf:
    """The bytes being read and the position in them."""
    cdef const unsigned char* data
    cdef Py_ssize_t size
    cdef Py_ssize_t pos


cdef inline int _byte(_Buf b) except -1:
    if b.pos >= b.size:
        raise ValueError("body ends early")
    b.pos += 1
    return b.data[b.pos - 1]


cdef int64_t _long(_Buf b) except? -1:
    """A zig-zag varint; longer than fastavro reads it (over 64 bits): an error."""
    cdef int byte = _byte(b)
    cdef uint64_t n = byte & 0x7F
    cdef int shift = 7
    while byte & 0x80:
        if shift > 63:
            raise ValueError("varint too long")
        byte = _byte(b)
        if shift == 63 and byte & 0x7E:
            raise ValueError("varint too long")
        n |= (<uint64_t>(byte & 0x7F)) << shift
        shift += 7
    return <int64_t>(n >> 1) ^ -(<int64_t>(n & 1))


cdef uint64_t _fixed(_Buf b, int width) except? 0:
    """``width`` little-endian bytes as an integer."""
    cdef uint64_t n = 0
    cdef int i
    if b.pos + width > b.size:
        raise ValueError("body ends early")
    for i in range(width):
        n |= (<uint64_t>b.data[b.pos + i]) << (8 * i)
    b.pos += width
    return n


cdef object _value(tuple prog, _Buf b):
    cdef int op = <int><object>PyTuple_GET_ITEM(prog, 0)
    cdef int64_t n
    cdef uint64_t bits
    cdef uint32_t bits32
    cdef double d
    cdef float f
    if op == OP_LONG:
        return _long(b)
    if op == OP_INT:
        n = _long(b)
        if not -2147483648 <= n < 2147483648:
            raise ValueError("int out of range")
        return n
    if op == OP_STRING:
        n = _long(b)
        if n < 0 or n > b.size - b.pos:
            raise ValueError("string past the end")
        b.pos += n
        return PyUnicode_DecodeUTF8(<const char*>(b.data + b.pos - n), n, NULL)
    if op == OP_DOUBLE:
        bits = _fixed(b, 8)
        memcpy(&d, &bits, 8)
        return d
    if op == OP_FLOAT:
        bits32 = <uint32_t>_fixed(b, 4)
        memcpy(&f, &bits32, 4)
        return <double>f
    if op == OP_BOOLEAN:
        n = _byte(b)
        if n > 1:
            raise ValueError("boolean byte")
        return n == 1
    if op == OP_NULL:
        return None
    if op == OP_ENUM:
        return _choose(<tuple>PyTuple_GET_ITEM(prog, 1), _long(b))
    if op == OP_RECORD:
        return _record(<tuple>PyTuple_GET_ITEM(prog, 1), <tuple>PyTuple_GET_ITEM(prog, 2), b)
    if op == OP_ARRAY:
        return _array(<tuple>PyTuple_GET_ITEM(prog, 1), b)
    if op == OP_UNION:
        return _union(<tuple>PyTuple_GET_ITEM(prog, 1), b)
    raise ValueError(f"unknown opcode {op}")


cdef object _choose(tuple options, int64_t i):
    if not 0 <= i < PyTuple_GET_SIZE(options):
        raise ValueError("index out of range")
    return <object>PyTuple_GET_ITEM(options, i)


cdef dict _record(tuple names, tuple fields, _Buf b):
    cdef dict out = {}
    cdef Py_ssize_t i
    for i in range(PyTuple_GET_SIZE(names)):
        PyDict_SetItem(out, <object>PyTuple_GET_ITEM(names, i),
                       _value(<tuple>PyTuple_GET_ITEM(fields, i), b))
    return out


cdef list _array(tuple item, _Buf b):
    cdef list out = []
    cdef int64_t count, i
    while True:
        count = _long(b)
        if count == 0:
            return out
        if count < 0:
            raise ValueError("array block with a size")
        for i in range(count):
            PyList_Append(out, _value(item, b))


cdef object _union(tuple branches, _Buf b):
    """A branch index, then that branch; a record branch as ``(name, record)``."""
    cdef tuple branch = _choose(branches, _long(b))
    cdef object name = <object>PyTuple_GET_ITEM(branch, 1)
    cdef object value = _value(<tuple>PyTuple_GET_ITEM(branch, 0), b)
    return value if name is None else (name, value)


cdef class Reader:
    """Reads one schema's body from ``buf`` at ``pos`` (``reader(buf, pos)``), given the
    schema's program."""

    cdef readonly tuple program

    def __init__(self, tuple program):
        self.program = program

    def __call__(self, bytes buf, Py_ssize_t pos):
        cdef _Buf b = _Buf.__new__(_Buf)
        if pos < 0 or pos > len(buf):
            raise ValueError("position outside the bytes")
        b.data = <const unsigned char*>(<char*>buf)
        b.size = len(buf)
        b.pos = pos
        return _value(self.program, b)
