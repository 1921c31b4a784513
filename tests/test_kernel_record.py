"""The neuron crosses the kernel boundary as one record: kernels.record.STATIC_FIELDS feeds
Static and both custom-op schemas; the C++ ``struct Args`` and its ctypes mirror agree field by
field."""

from __future__ import annotations

import ctypes
import dataclasses
import re

import torch

from multispike.kernels import cpu
from multispike.kernels.record import STATIC_FIELDS, Static, record_of
from multispike.neurons import IFNode, LIFNode, PLIFNode

C_TYPES = {"int64_t": ctypes.c_int64, "int32_t": ctypes.c_int32, "double": ctypes.c_double,
           "const double*": ctypes.c_void_p, "double*": ctypes.c_void_p,
           "uint8_t*": ctypes.c_void_p}


def _cpp_args_fields() -> list[tuple[str, object]]:
    """``(name, ctypes type)`` of ``struct Args`` in csrc/multistep.cpp, in order."""
    src = cpu.SOURCE.read_text()
    body = re.search(r"struct Args \{(.*?)\n\};", src, re.S).group(1)
    fields = []
    for line in body.splitlines():
        line = line.split("//")[0].strip().rstrip(";")
        if not line:
            continue
        m = re.match(r"((?:const )?\w+\*?)\s+(.*)", line)
        ctype, names = m.group(1), m.group(2)
        for name in (n.strip() for n in names.split(",")):
            arr = re.match(r"(\w+)\[(\w+)\]", name)
            if arr:
                fields.append((arr.group(1), C_TYPES[ctype] * cpu.MAX_THR))
            else:
                fields.append((name, C_TYPES[ctype]))
    return fields


def test_ctypes_mirror_equals_the_cpp_struct():
    mirror = [(name, kind) for name, kind in cpu.Args._fields_]
    cpp = _cpp_args_fields()
    assert [n for n, _ in mirror] == [n for n, _ in cpp]
    for (name, a), (_, b) in zip(mirror, cpp, strict=True):
        if hasattr(a, "_length_"):  # double thr[MAX_THR]
            assert (a._type_, a._length_) == (b._type_, b._length_), name
        else:
            assert a == b, name


def test_static_and_schemas_come_from_the_field_table():
    names = [name for name, _, _ in STATIC_FIELDS]
    assert [f.name for f in dataclasses.fields(Static)] == names
    for op in (torch.ops.multispike.neuron_forward.default,
               torch.ops.multispike.neuron_backward.default):
        args = [a.name for a in op._schema.arguments]
        start = args.index(names[0])
        assert args[start:start + len(names)] == names
    for name, _, doc in STATIC_FIELDS:
        assert f"``{name}``" in Static.__doc__ and doc


def test_static_round_trips_through_the_op_arguments():
    for node in (PLIFNode(firing="mt"), LIFNode(firing="ternary", reset="any"),
                 IFNode(firing="integer", levels=3, learn_thresholds=True)):
        st = record_of(node).static
        assert Static.from_args(st.args()) == st
