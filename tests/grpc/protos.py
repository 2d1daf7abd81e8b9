"""Message types for the tests, built from a descriptor (no generated module to keep in sync)."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FIELD = descriptor_pb2.FieldDescriptorProto


def _build() -> dict[str, Any]:
    pool = descriptor_pool.Default()
    name = "workhorse_tests/images.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        file = descriptor_pb2.FileDescriptorProto(name=name, package="whtest.images",
                                                  syntax="proto3")
        resize = file.message_type.add(name="ResizeRequest")
        resize.field.add(name="path", number=1, type=_FIELD.TYPE_STRING,
                         label=_FIELD.LABEL_OPTIONAL)
        resize.field.add(name="width", number=2, type=_FIELD.TYPE_INT32,
                         label=_FIELD.LABEL_OPTIONAL)
        crop = file.message_type.add(name="CropRequest")
        crop.field.add(name="path", number=1, type=_FIELD.TYPE_STRING,
                       label=_FIELD.LABEL_OPTIONAL)
        pool.Add(file)
    return {short: message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"whtest.images.{short}"))
        for short in ("ResizeRequest", "CropRequest")}


_TYPES = _build()
ResizeRequest: Any = _TYPES["ResizeRequest"]
CropRequest: Any = _TYPES["CropRequest"]
