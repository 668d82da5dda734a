"""A decoder compiled for one Avro schema: straight-line Python generated from the schema.

fastavro's `schemaless_reader` costs ~6-15 us a small record here, most of it per-call
overhead (schema checks, a BytesIO, the generic type dispatch), which is what the sinks pay
for every record they read. For a schema read as it was written (no resolution), the code
below reads the bytes with the layout known in advance: the same values as fastavro (dicts
in field order, enum symbols, None for null), and an exception for any body that does not
fit (truncated, a bad union or enum index, a negative length, invalid UTF-8), exactly
where fastavro raises. `compile_decoder`
returns None for what it does not cover (logical types, recursive types); the caller keeps
fastavro for those. tests/unit/test_avrodec.py checks it against fastavro, record by record.
"""
from __future__ import annotations

import struct
from typing import Any, Callable

_PRIMITIVE = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class _Unsupported(Exception):
    pass


class _Gen:
    def __init__(self, named: dict) -> None:
        self.lines: list[str] = []
        self.consts: dict[str, Any] = {}
        self.named = named
        self.n = 0
        self.stack: list[str] = []

    def var(self, prefix: str = "v") -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def emit(self, ind: int, line: str) -> None:
        self.lines.append("    " * ind + line)

    def long(self, ind: int, out: str) -> None:
        """Zig-zag varint into `out`."""
        b = self.var("b")
        self.emit(ind, f"{b} = data[pos]; pos += 1")
        self.emit(ind, f"if {b} & 0x80:")
        self.emit(ind + 1, f"{b} &= 0x7f; s = 7")
        self.emit(ind + 1, "while True:")
        self.emit(ind + 2, "c = data[pos]; pos += 1")
        self.emit(ind + 2, f"{b} |= (c & 0x7f) << s")
        self.emit(ind + 2, "if not c & 0x80: break")
        self.emit(ind + 2, "s += 7")
        self.emit(ind, f"{out} = ({b} >> 1) ^ -({b} & 1)")

    def sized(self, ind: int, out: str, decode: bool) -> None:
        n = self.var("n")
        self.long(ind, n)
        self.emit(ind, f"end = pos + {n}")
        self.emit(ind, f"if {n} < 0 or end > size: raise ValueError('bad length')")
        self.emit(ind, f"{out} = data[pos:end]{'.decode()' if decode else ''}; pos = end")

    def value(self, schema: Any, ind: int, out: str) -> None:
        if isinstance(schema, str):
            if schema in _PRIMITIVE:
                schema = {"type": schema}
            elif schema in self.named:
                if schema in self.stack:
                    raise _Unsupported(f"recursive type {schema}")
                self.stack.append(schema)
                self.value(self.named[schema], ind, out)
                self.stack.pop()
                return
            else:
                raise _Unsupported(f"unknown type {schema}")
        if isinstance(schema, list):
            return self.union(schema, ind, out)
        if "logicalType" in schema:
            raise _Unsupported("logical type")
        t = schema["type"]
        if isinstance(t, (dict, list)) or (isinstance(t, str) and t not in _PRIMITIVE and t not in (
                "record", "error", "enum", "array", "map", "fixed")):
            return self.value(t, ind, out)
        if t == "null":
            self.emit(ind, f"{out} = None")
        elif t == "boolean":
            self.emit(ind, f"{out} = data[pos] != 0; pos += 1")
        elif t in ("int", "long"):
            self.long(ind, out)
        elif t in ("double", "float"):
            fn = "_d" if t == "double" else "_f"
            self.emit(ind, f"{out} = {fn}(data, pos)[0]; pos += {8 if t == 'double' else 4}")
        elif t == "string":
            self.sized(ind, out, True)
        elif t == "bytes":
            self.sized(ind, out, False)
        elif t == "fixed":
            self.emit(ind, f"end = pos + {int(schema['size'])}")
            self.emit(ind, "if end > size: raise ValueError('short fixed')")
            self.emit(ind, f"{out} = data[pos:end]; pos = end")
        elif t == "enum":
            syms = self.var("E")
            self.consts[syms] = tuple(schema["symbols"])
            i = self.var("i")
            self.long(ind, i)
            # (as fastavro: symbols[index], so a negative index counts from the end)
            self.emit(ind, f"{out} = {syms}[{i}]")
        elif t in ("record", "error"):
            name = schema.get("name")
            if name in self.stack:
                raise _Unsupported(f"recursive type {name}")
            self.stack.append(name)
            names = []
            for f in schema["fields"]:
                fv = self.var("f")
                self.value(f["type"], ind, fv)
                names.append(f"{f['name']!r}: {fv}")
            self.stack.pop()
            self.emit(ind, f"{out} = {{{', '.join(names)}}}")
        elif t in ("array", "map"):
            self.emit(ind, f"{out} = {'[]' if t == 'array' else '{}'}")
            cnt = self.var("k")
            self.long(ind, cnt)
            self.emit(ind, f"while {cnt}:")
            self.emit(ind + 1, f"if {cnt} < 0:")
            self.emit(ind + 2, f"{cnt} = -{cnt}")
            self.long(ind + 2, "_")   # the block's size in bytes: not needed
            self.emit(ind + 1, f"for _ in range({cnt}):")
            item = self.var("x")
            if t == "map":
                key = self.var("m")
                self.sized(ind + 2, key, True)
                self.value(schema["values"], ind + 2, item)
                self.emit(ind + 2, f"{out}[{key}] = {item}")
            else:
                self.value(schema["items"], ind + 2, item)
                self.emit(ind + 2, f"{out}.append({item})")
            self.long(ind + 1, cnt)
        else:
            raise _Unsupported(f"type {t}")

    def union(self, branches: list, ind: int, out: str) -> None:
        i = self.var("u")
        self.long(ind, i)
        for k, b in enumerate(branches):
            self.emit(ind, f"{'if' if k == 0 else 'elif'} {i} == {k}:")
            self.value(b, ind + 1, out)
        self.emit(ind, "else:")
        self.emit(ind + 1, "raise ValueError('bad union index')")


def compile_decoder(parsed_schema: dict) -> Callable[[bytes, int], tuple[dict, int]] | None:
    """`decode(data, pos) -> (record, end)` for a fastavro-parsed schema, or None when the
    schema uses something this compiler does not cover."""
    named = dict(parsed_schema.get("__named_schemas", {})) if isinstance(parsed_schema, dict) else {}
    g = _Gen(named)
    try:
        g.value(parsed_schema, 1, "rec")
    except _Unsupported:
        return None
    src = "def decode(data, pos):\n    size = len(data)\n" + "\n".join(g.lines) + "\n    return rec, pos\n"
    ns: dict[str, Any] = {"_d": struct.Struct("<d").unpack_from, "_f": struct.Struct("<f").unpack_from,
                          **g.consts}
    exec(compile(src, f"<avro decoder {parsed_schema.get('name', '?')}>", "exec"), ns)  # noqa: S102
    fn = ns["decode"]
    fn.source = src
    return fn
