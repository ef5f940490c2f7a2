"""TensorBoard event files (``events.out.tfevents.*``), read without TensorFlow or TensorBoard.

An event file is a sequence of TFRecords::

    uint64 length | uint32 masked crc32c(length) | data[length] | uint32 masked crc32c(data)

(little-endian; masked crc = ``((crc >> 15) | (crc << 17)) + 0xa282ead8``),
each ``data`` a serialized ``tensorflow.Event``. This module declares the few
messages it needs (``Event``, ``Summary``, ``Summary.Value``,
``SummaryMetadata``, ``TensorProto``, ``SessionLog`` and the hparams
plugin's ``HParamsPluginData``) with the field numbers of TensorFlow's and
TensorBoard's ``.proto`` files, and lets protobuf parse them; fields it does
not declare (graphs, images, histograms) are skipped. Checksums are
verified: a record that fails one, or is cut short, raises
:class:`ImportFormatError` with the record number and byte offset; read
leniently (``Problems(strict=False)``), a record whose data fails its
checksum is skipped, and a broken frame (a file cut short while it was
written) ends the file there, keeping what came before.

Scalars are ``Summary.Value.simple_value`` (TF1, tensorboardX, PyTorch's
``SummaryWriter.add_scalar``) and rank-0 numeric tensors (TF2
``tf.summary.scalar``, plugin ``scalars``). Hyperparameters come from the
hparams plugin's session-start record (Lightning's ``TensorBoardLogger``
writes one). A folder's event files are one run (as TensorBoard shows
them), read in file-name order; values logged again at a step (a resumed
run) replace the earlier ones. Keras's ``TensorBoard`` callback writes one run
as two sibling folders, ``train/`` and ``validation/``, with the same tags
(``epoch_loss``): they are read as one run named after their parent, the
validation folder's tags prefixed ``val_`` (``val_epoch_loss`` -> ``val/loss``).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    json_format,
    message_factory,
    struct_pb2,
)

from runwatch.client.importers.base import STRICT, ImportedRun, ImportFormatError, Problems, RunBuilder
from runwatch.client.importers.util import meaningful_name

__all__ = ["KERAS_SPLITS", "crc32c", "iter_records", "keras_run", "read", "read_events"]

FORMAT = "tensorboard"
KERAS_SPLITS = {"train": "", "validation": "val_"}  # Keras's sibling folders of one run, and their tag prefixes
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


# -- CRC-32C (Castagnoli), table-driven ------------------------------------------------------

def _table() -> list[int]:
    poly = 0x82F63B78
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        out.append(c)
    return out


_CRC_TABLE = _table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data``.

    Examples
    --------
    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def iter_records(path: Path, verify: bool = True, problems: Problems = STRICT):
    """Yield ``(record number, byte offset, data)`` of a TFRecord file.

    Raises
    ------
    ImportFormatError
        On a truncated record or a checksum mismatch (strict ``problems``).
    """
    data = Path(path).read_bytes()
    pos = 0
    n = 0
    size = len(data)
    while pos < size:
        where = f"record {n} (byte {pos})"
        rest = "the rest of the file was skipped"
        if pos + 12 > size:
            problems.skip(ImportFormatError(path, where, f"truncated record header ({size - pos} of 12 bytes)"), rest)
            return
        (length,) = _U64.unpack_from(data, pos)
        (len_crc,) = _U32.unpack_from(data, pos + 8)
        if verify and _masked(crc32c(data[pos : pos + 8])) != len_crc:
            reason = "length checksum mismatch: not a TFRecord/event file, or corrupted"
            problems.skip(ImportFormatError(path, where, reason), rest)
            return
        start = pos + 12
        end = start + length
        if end + 4 > size:
            reason = f"truncated record: {length} data bytes announced, {max(size - start - 4, 0)} present"
            problems.skip(ImportFormatError(path, where, reason), rest)
            return
        payload = data[start:end]
        (data_crc,) = _U32.unpack_from(data, end)
        if verify and _masked(crc32c(payload)) != data_crc:
            problems.skip(ImportFormatError(path, where, "data checksum mismatch: corrupted record"), "the record was skipped")
        else:
            yield n, pos, payload
        pos = end + 4
        n += 1


# -- the subset of TensorFlow/TensorBoard messages needed ---------------------------------------

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg, name, number, ftype, label=_F.LABEL_OPTIONAL, type_name=None, oneof=None):
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if oneof is not None:
        f.oneof_index = oneof
    return f


def _build_messages() -> dict[str, Any]:
    fd = descriptor_pb2.FileDescriptorProto(
        name="runwatch_tb_subset.proto", package="runwatch_tb", syntax="proto3",
        dependency=["google/protobuf/struct.proto"],
    )
    P = ".runwatch_tb."
    # TensorShapeProto {repeated Dim dim = 2; bool unknown_rank = 3;}  Dim {int64 size = 1; string name = 2;}
    shape = fd.message_type.add(name="TensorShapeProto")
    dim = shape.nested_type.add(name="Dim")
    _field(dim, "size", 1, _F.TYPE_INT64)
    _field(dim, "name", 2, _F.TYPE_STRING)
    _field(shape, "dim", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, P + "TensorShapeProto.Dim")
    _field(shape, "unknown_rank", 3, _F.TYPE_BOOL)
    # TensorProto (tensorflow/core/framework/tensor.proto)
    t = fd.message_type.add(name="TensorProto")
    _field(t, "dtype", 1, _F.TYPE_INT32)
    _field(t, "tensor_shape", 2, _F.TYPE_MESSAGE, type_name=P + "TensorShapeProto")
    _field(t, "version_number", 3, _F.TYPE_INT32)
    _field(t, "tensor_content", 4, _F.TYPE_BYTES)
    _field(t, "float_val", 5, _F.TYPE_FLOAT, _F.LABEL_REPEATED)
    _field(t, "double_val", 6, _F.TYPE_DOUBLE, _F.LABEL_REPEATED)
    _field(t, "int_val", 7, _F.TYPE_INT32, _F.LABEL_REPEATED)
    _field(t, "string_val", 8, _F.TYPE_BYTES, _F.LABEL_REPEATED)
    _field(t, "int64_val", 10, _F.TYPE_INT64, _F.LABEL_REPEATED)
    _field(t, "bool_val", 11, _F.TYPE_BOOL, _F.LABEL_REPEATED)
    _field(t, "half_val", 13, _F.TYPE_INT32, _F.LABEL_REPEATED)
    _field(t, "uint32_val", 16, _F.TYPE_UINT32, _F.LABEL_REPEATED)
    _field(t, "uint64_val", 17, _F.TYPE_UINT64, _F.LABEL_REPEATED)
    # SummaryMetadata {PluginData plugin_data = 1; string display_name = 2; string summary_description = 3; int32 data_class = 4}
    sm = fd.message_type.add(name="SummaryMetadata")
    pd = sm.nested_type.add(name="PluginData")
    _field(pd, "plugin_name", 1, _F.TYPE_STRING)
    _field(pd, "content", 2, _F.TYPE_BYTES)
    _field(sm, "plugin_data", 1, _F.TYPE_MESSAGE, type_name=P + "SummaryMetadata.PluginData")
    _field(sm, "display_name", 2, _F.TYPE_STRING)
    _field(sm, "summary_description", 3, _F.TYPE_STRING)
    _field(sm, "data_class", 4, _F.TYPE_INT32)
    # Summary {repeated Value value = 1}; Value {string node_name = 7; string tag = 1; SummaryMetadata metadata = 9;
    #   oneof value {float simple_value = 2; bytes obsolete_old_style_histogram = 3; Image image = 4;
    #   HistogramProto histo = 5; Audio audio = 6; TensorProto tensor = 8}}
    s = fd.message_type.add(name="Summary")
    v = s.nested_type.add(name="Value")
    v.oneof_decl.add(name="value")
    _field(v, "tag", 1, _F.TYPE_STRING)
    _field(v, "node_name", 7, _F.TYPE_STRING)
    _field(v, "metadata", 9, _F.TYPE_MESSAGE, type_name=P + "SummaryMetadata")
    _field(v, "simple_value", 2, _F.TYPE_FLOAT, oneof=0)
    _field(v, "tensor", 8, _F.TYPE_MESSAGE, type_name=P + "TensorProto", oneof=0)
    _field(s, "value", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, P + "Summary.Value")
    # SessionLog {SessionStatus status = 1; string checkpoint_path = 2; string msg = 3}
    sl = fd.message_type.add(name="SessionLog")
    _field(sl, "status", 1, _F.TYPE_INT32)
    _field(sl, "checkpoint_path", 2, _F.TYPE_STRING)
    _field(sl, "msg", 3, _F.TYPE_STRING)
    # Event {double wall_time = 1; int64 step = 2; oneof what {string file_version = 3; bytes graph_def = 4;
    #   Summary summary = 5; LogMessage log_message = 6; SessionLog session_log = 7; ...}}
    e = fd.message_type.add(name="Event")
    e.oneof_decl.add(name="what")
    _field(e, "wall_time", 1, _F.TYPE_DOUBLE)
    _field(e, "step", 2, _F.TYPE_INT64)
    _field(e, "file_version", 3, _F.TYPE_STRING, oneof=0)
    _field(e, "summary", 5, _F.TYPE_MESSAGE, type_name=P + "Summary", oneof=0)
    _field(e, "session_log", 7, _F.TYPE_MESSAGE, type_name=P + "SessionLog", oneof=0)
    # tensorboard/plugins/hparams/plugin_data.proto: HParamsPluginData {int32 version = 1; oneof data {
    #   Experiment experiment = 2; SessionStartInfo session_start_info = 3; SessionEndInfo session_end_info = 4}}
    # SessionStartInfo {map<string, google.protobuf.Value> hparams = 1; string model_uri = 2; string monitor_url = 3;
    #   string group_name = 4; double start_time_secs = 5}; SessionEndInfo {int32 status = 1; double end_time_secs = 2}
    ssi = fd.message_type.add(name="SessionStartInfo")
    entry = ssi.nested_type.add(name="HparamsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_MESSAGE, type_name=".google.protobuf.Value")
    _field(ssi, "hparams", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, P + "SessionStartInfo.HparamsEntry")
    _field(ssi, "group_name", 4, _F.TYPE_STRING)
    _field(ssi, "start_time_secs", 5, _F.TYPE_DOUBLE)
    sei = fd.message_type.add(name="SessionEndInfo")
    _field(sei, "status", 1, _F.TYPE_INT32)
    _field(sei, "end_time_secs", 2, _F.TYPE_DOUBLE)
    hp = fd.message_type.add(name="HParamsPluginData")
    hp.oneof_decl.add(name="data")
    _field(hp, "version", 1, _F.TYPE_INT32)
    _field(hp, "session_start_info", 3, _F.TYPE_MESSAGE, type_name=P + "SessionStartInfo", oneof=0)
    _field(hp, "session_end_info", 4, _F.TYPE_MESSAGE, type_name=P + "SessionEndInfo", oneof=0)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(struct_pb2.DESCRIPTOR.serialized_pb))
    pool.Add(fd)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"runwatch_tb.{name}"))
        for name in ("Event", "HParamsPluginData", "TensorProto")
    }


_MESSAGES = _build_messages()
Event = _MESSAGES["Event"]
HParamsPluginData = _MESSAGES["HParamsPluginData"]

# TensorFlow DataType numbers -> struct format of one element
_DTYPES = {1: "<f", 2: "<d", 3: "<i", 9: "<q", 19: "<e", 4: "<B", 5: "<h", 6: "<b", 17: "<H", 22: "<I", 23: "<Q", 10: "<?"}
_BFLOAT16 = 14
_SESSION_STATUS = {1: "finished", 2: "failed", 3: "killed", 4: "running"}  # hparams Status: SUCCESS, FAILURE, ABORTED, RUNNING


def _tensor_scalar(t: Any) -> float | None:
    """The value of a rank-0 (or one-element) numeric tensor, else None."""
    if len(t.tensor_shape.dim) > 1 or any(d.size != 1 for d in t.tensor_shape.dim):
        return None
    dtype = t.dtype
    if t.tensor_content:
        if dtype == _BFLOAT16 and len(t.tensor_content) == 2:
            return struct.unpack("<f", b"\0\0" + t.tensor_content)[0]
        fmt = _DTYPES.get(dtype)
        if fmt is None or len(t.tensor_content) != struct.calcsize(fmt):
            return None
        return float(struct.unpack(fmt, t.tensor_content)[0])
    for values in (t.float_val, t.double_val, t.int64_val, t.int_val, t.uint32_val, t.uint64_val, t.bool_val):
        if len(values) == 1:
            return float(values[0])
    if len(t.half_val) == 1:
        bits = t.half_val[0] & 0xFFFF
        if dtype == _BFLOAT16:
            return struct.unpack("<f", struct.pack("<I", bits << 16))[0]
        return struct.unpack("<e", struct.pack("<H", bits))[0]
    return None


def read_events(path: Path, builder: RunBuilder, run: ImportedRun, problems: Problems = STRICT, prefix: str = "") -> int:
    """Add the scalars of one event file to ``builder`` (tags prefixed ``prefix``); returns how many records were read."""
    n_records = 0
    for n, offset, data in iter_records(path, problems=problems):
        n_records += 1
        try:
            event = Event.FromString(data)
        except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and friends
            error = ImportFormatError(path, f"record {n} (byte {offset})", f"not an Event message: {exc}")
            problems.skip(error, "the record was skipped")
            continue
        kind = event.WhichOneof("what")
        if kind == "file_version":
            run.environment.setdefault("tensorboard.file_version", event.file_version)
            continue
        if kind != "summary":
            continue
        for value in event.summary.value:
            plugin = value.metadata.plugin_data.plugin_name
            if plugin == "hparams":
                _hparams(value.metadata.plugin_data.content, run)
                continue
            which = value.WhichOneof("value")
            if which == "simple_value":
                number = float(value.simple_value)
            elif which == "tensor" and plugin in ("scalars", ""):
                number = _tensor_scalar(value.tensor)
                if number is None:
                    continue
            else:
                continue
            tag = value.tag or value.node_name
            if tag:
                builder.add(int(event.step), prefix + tag, number, float(event.wall_time))
    return n_records


def _hparams(content: bytes, run: ImportedRun) -> None:
    try:
        data = HParamsPluginData.FromString(content)
    except Exception:  # noqa: BLE001 - an unreadable hparams record is not worth failing the import
        return
    which = data.WhichOneof("data")
    if which == "session_start_info":
        info = data.session_start_info
        for key, value in info.hparams.items():
            run.hyperparameters[key] = json_format.MessageToDict(value)
        if info.start_time_secs:
            run.start_time = info.start_time_secs
    elif which == "session_end_info":
        run.status = _SESSION_STATUS.get(data.session_end_info.status, run.status)
        if data.session_end_info.end_time_secs:
            run.end_time = data.session_end_info.end_time_secs


def keras_run(folders: list[Path]) -> Path | None:
    """The run folder when ``folders`` are Keras's ``train/`` and ``validation/`` of one parent, else None."""
    parents = {f.parent for f in folders}
    if len(folders) == 2 and len(parents) == 1 and {f.name for f in folders} == set(KERAS_SPLITS):
        return parents.pop()
    return None


def read(paths: Path | list[Path], canonical: bool = True, problems: Problems = STRICT) -> list[ImportedRun]:
    """Read the event files of one folder (or one file), or of a Keras run's two folders, as one run.

    Bad records go to ``problems``.
    """
    files = sorted([paths] if isinstance(paths, Path) else paths)
    keras = keras_run(sorted({f.parent for f in files}))
    folder = keras if keras is not None else files[0].parent
    source = folder if len(files) > 1 else files[0]
    run = ImportedRun(FORMAT, source, key=str(folder), name=meaningful_name(folder), tags=["tensorboard"])
    builder = RunBuilder(run)
    for f in files:
        read_events(f, builder, run, problems, KERAS_SPLITS[f.parent.name] if keras is not None else "")
    if len(files) > 1:
        run.notes.append(f"{len(files)} event files merged" + (" (Keras train/ and validation/)" if keras else ""))
    return [builder.build(canonical)]


def is_event_file(path: Path) -> bool:
    return path.is_file() and "tfevents" in path.name
