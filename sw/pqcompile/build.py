"""The build-directory format: write (atomic, sealed), read and verify.

A build directory holds ``manifest.json`` and the files it names (``mem.hex``, ``program.asm``,
``expected_output.npy``, inputs, labels). The manifest seals the directory:

- ``sha256``: the SHA-256 of every other file of the build, by file name;
- ``digest``: the SHA-256 of the manifest itself (its canonical JSON without the ``digest`` key).

:func:`read` (and :func:`load`, which also reads the memory image) checks both before anything is used, so a
truncated, edited, emptied or missing file is reported naming the file (:class:`BuildError`) instead of being
simulated. The compiler, the golden simulator and the testbench read builds only through this module.

:func:`write` never deletes or overwrites anything it did not write itself: the target must be a new path,
an empty directory, or an earlier build that still verifies and holds no file beyond the ones its manifest
names (:func:`check_target`); anything else is refused. The new build is written to a temporary directory
beside the target (with the permissions of the umask) and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import hexfmt, sim
from .clitools import printable
from .spec import HwConfig
from .spec import load as load_spec

FORMAT = "pqa-build"
# 6: batch_from, stamps.ops (the pass and op each stamp ends); 5: packed tables (shape.pack), batch / passes;
# 4: act banks, run / pool / add src and dst, 8-counter stamp records; 3: 4 counters; 2: one cycle word
VERSION = 6
MANIFEST = "manifest.json"
MANIFEST_MAX_BYTES = 64 << 20
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")  # a plain file name inside the build directory


class BuildError(ValueError):
    """A build directory that is missing, foreign, damaged or not safe to replace (names the file and field)."""


def canonical(manifest: Mapping[str, Any]) -> bytes:
    """The bytes the ``digest`` covers: sorted keys, no white space, ASCII, no NaN (``digest`` itself left out)."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def seal(manifest: dict[str, Any], directory: Path) -> dict[str, Any]:
    """Put the files' digests (every file named in ``manifest['sha256']`` as it is now in ``directory``) and
    the manifest's own digest into ``manifest``; returns it."""
    manifest["sha256"] = {name: sha256_file(directory / name) for name in sorted(manifest.get("sha256", {}))}
    manifest["digest"] = hashlib.sha256(canonical(manifest)).hexdigest()
    return manifest


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _where(builddir: Path, field: str = "") -> str:
    return f"{printable(builddir)}/{MANIFEST}" + (f": field '{field}'" if field else "")


def read(builddir: str | Path, older: bool = False) -> dict[str, Any]:
    """The verified manifest of ``builddir``: format and version, its own digest, and the digest of every file
    it names. Raises :class:`BuildError` naming the file (and field) on anything else. ``older``: accept a
    sealed build of an older format version too (its seal verified, its fields not: :func:`check_target`
    replaces such a build)."""
    builddir = Path(builddir)
    path = builddir / MANIFEST
    if not builddir.is_dir():
        raise BuildError(f"{printable(builddir)}: no such build directory")
    if not path.exists() and not path.is_symlink():
        raise BuildError(f"{printable(builddir)}: no {MANIFEST} (not a pqcompile build directory)")
    if path.is_symlink() or not path.is_file():
        raise BuildError(f"{printable(path)}: not a regular file")
    if path.stat().st_size > MANIFEST_MAX_BYTES:
        raise BuildError(f"{printable(path)}: {path.stat().st_size} bytes, beyond the {MANIFEST_MAX_BYTES} a manifest "
                         "may have")
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise BuildError(f"{printable(builddir)}: no {MANIFEST} (not a pqcompile build directory)") from None
    except OSError as exc:
        raise BuildError(f"{printable(path)}: cannot be read ({exc.strerror})") from None
    try:
        manifest = json.loads(text.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BuildError(f"{printable(path)}: not valid JSON ({printable(exc)})") from None
    if not isinstance(manifest, dict):
        raise BuildError(f"{printable(path)}: not a JSON object")
    if manifest.get("format") != FORMAT:
        raise BuildError(f"{_where(builddir, 'format')} is {printable(repr(manifest.get('format')))}, not "
                         f"'{FORMAT}' (not a pqcompile build directory)")
    version = manifest.get("version")
    old = older and isinstance(version, int) and not isinstance(version, bool) and 1 <= version < VERSION
    if version != VERSION and not old:
        raise BuildError(f"{_where(builddir, 'version')} is {printable(repr(manifest.get('version')))}; this "
                         f"pqcompile reads version {VERSION}: compile the model again")
    digest = manifest.get("digest")
    if not isinstance(digest, str) or hashlib.sha256(canonical(manifest)).hexdigest() != digest:
        raise BuildError(f"{_where(builddir, 'digest')} does not match the manifest's contents (the manifest was "
                         "edited or damaged after pqcompile wrote it)")
    files = manifest.get("sha256")
    if not isinstance(files, dict) or not files:
        raise BuildError(f"{_where(builddir, 'sha256')}: missing or not an object of file digests")
    for name, want in files.items():
        if not isinstance(name, str) or not _NAME_RE.match(name) or name == MANIFEST or not isinstance(want, str):
            raise BuildError(f"{_where(builddir, 'sha256')}: bad entry {printable(repr(name))}")
        f = builddir / name
        if not f.is_file() or f.is_symlink():
            raise BuildError(f"{printable(f)}: missing (named in {MANIFEST} field 'sha256')")
        if sha256_file(f) != want:
            raise BuildError(f"{printable(f)}: contents differ from the digest in {MANIFEST} field 'sha256' (the "
                             "file was changed or damaged after pqcompile wrote it)")
    if not old:
        _check_fields(manifest, builddir)
    return manifest


def _check_fields(m: dict[str, Any], builddir: Path) -> None:
    """The types and ranges of the manifest fields the readers use (a sealed manifest may still be forged)."""

    def bad(field: str, want: str) -> BuildError:
        got = m
        for part in field.split("."):
            got = got.get(part) if isinstance(got, dict) else None  # type: ignore[assignment]
        return BuildError(f"{_where(builddir, field)} must be {want}, got {printable(repr(got), 80)}")

    def num(v: Any, lo: int = 0, hi: int = 1 << 64) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi

    files = m["sha256"]
    for field in ("model", "config"):
        if not isinstance(m.get(field), str):
            raise bad(field, "a string")
    for field in ("image", "program"):
        if m.get(field) not in files:
            raise bad(field, "the name of a file of the build")
    params = m.get("config_params")
    if not isinstance(params, dict) or not all(isinstance(k, str) and num(v) for k, v in params.items()) \
            or not num(params.get("AxiDataWidth"), 64, 1024) or not num(params.get("AxiAddrWidth"), 12, 32):
        raise bad("config_params", "an object of non-negative integers with AxiDataWidth and AxiAddrWidth")
    if not num(m.get("mem_bytes"), 8, 1 << params["AxiAddrWidth"]):
        raise bad("mem_bytes", f"an integer from 8 to 2^{params['AxiAddrWidth']}")
    if not num(m.get("insn_base"), 0, m["mem_bytes"] - 1):
        raise bad("insn_base", "a byte address inside the memory")
    if not num(m.get("n_insns")):
        raise bad("n_insns", "a non-negative integer")
    exp = m.get("expected")
    if not isinstance(exp, dict):
        raise bad("expected", "an object")
    for key in ("sim_insns", "sim_err_code", "sim_err_pc", "sim_cycle_estimate"):
        if not num(exp.get(key), 0, 1 << 48):
            raise bad(f"expected.{key}", "a non-negative integer")
    if "output" in exp and exp["output"] not in files:
        raise bad("expected.output", "the name of a file of the build")
    for region in ("input", "output"):
        r = m.get(region)
        if r is not None and not (isinstance(r, dict) and num(r.get("addr")) and isinstance(r.get("shape"), list)
                                  and len(r["shape"]) == 2 and all(num(x) for x in r["shape"])
                                  and num(r.get("stride", 0)) and isinstance(r.get("tensor", []), list)
                                  and all(num(x) for x in r.get("tensor", []))):
            raise bad(region, "a region {addr, shape [n, size], stride, tensor}")
        if r is not None:
            _region_index(r, m["mem_bytes"], region)
    st = m.get("stamps")
    if st is not None and not (isinstance(st, dict) and num(st.get("addr")) and isinstance(st.get("labels"), list)
                               and all(isinstance(x, str) for x in st["labels"])):
        raise bad("stamps", "an object {addr, labels, counters, record_bytes, record_stride}")
    if st is not None:
        want = stamps_entry(0, [])
        for key in ("counters", "record_bytes", "record_stride"):
            if st.get(key) != want[key]:
                raise bad(f"stamps.{key}", f"{want[key]!r} (the stamp record of this spec: compile the model again)")
        _region_index(_stamps_region(st), m["mem_bytes"], "stamps")
    layers = m.get("layers")
    if not isinstance(layers, list) or not all(
            isinstance(lay, dict) and isinstance(lay.get("name"), str)
            and all(num(lay.get(k, 0)) for k in ("d", "m", "c", "k", "v", "predicted_cycles")) for lay in layers):
        raise bad("layers", "a list of objects with a name and integer d, m, c, k, v")
    passes = m.get("passes", 1)
    if not num(passes, 1) or not num(m.get("batch", 1), 1):
        raise bad("passes / batch", "positive integers")
    frm = m.get("batch_from")
    if frm is not None and not (isinstance(frm, str) and any(lay["name"] == frm for lay in layers)):
        raise bad("batch_from", "the name of one of the layers")
    which = None if st is None else st.get("ops")
    if which is not None:  # a program without layers (a raw one, e.g. a compiled one mutated) keeps its labels
        ok = isinstance(which, list) and len(which) == len(st["labels"]) - 1 and all(
            isinstance(w, list) and len(w) == 2 and num(w[0]) and num(w[1]) for w in which)
        if ok and layers:
            ok = all(w[0] < passes and w[1] < len(layers) and st["labels"][j + 1] == layers[w[1]]["name"]
                     for j, w in enumerate(which))
        if not ok:
            raise bad("stamps.ops", "one [pass, layer] pair per label after the first, naming that label's layer")
    elif st is not None and layers and len(st["labels"]) != passes * len(layers) + 1:
        raise bad("stamps", f"one label more than the {len(layers)} layers times the {passes} passes")
    for key in ("n_columns", "n_images"):
        if key in m and not num(m[key], 1):
            raise bad(key, "a positive integer")
    for key in ("accuracy", "accuracy_host"):
        acc = m.get(key)
        if acc is not None and not (isinstance(acc, dict) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in acc.values())):
            raise bad(key, "an object of fractions in [0, 1]")
    extra = m.get("files")
    if extra is not None and not (isinstance(extra, dict) and all(v in files for v in extra.values())):
        raise bad("files", "an object naming files of the build")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load(builddir: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """The verified manifest and the initial memory (the validated hex image) of ``builddir``. Raises
    :class:`BuildError` or :class:`hexfmt.HexFormatError` (file and line)."""
    builddir = Path(builddir)
    manifest = read(builddir)
    bus, size = manifest["config_params"]["AxiDataWidth"] // 8, manifest["mem_bytes"]
    words = hexfmt.read_image(builddir / str(manifest["image"]), bus)
    return manifest, hexfmt.to_bytes(words, size, bus)


def config_of(builddir: str | Path, manifest: Mapping[str, Any]) -> HwConfig:
    """The hardware configuration a verified build was compiled for, from this spec: refused
    (:class:`BuildError`) when the spec has no such configuration or its parameters differ from the build's."""
    try:
        cfg = load_spec().config(str(manifest["config"]))
    except KeyError as exc:
        raise BuildError(f"{_where(Path(builddir), 'config')}: {printable(exc.args[0] if exc.args else exc)}") from None
    if dict(cfg.params) != manifest.get("config_params"):
        diff = sorted(k for k in set(cfg.params) | set(manifest.get("config_params", {}))
                      if cfg.params.get(k) != manifest.get("config_params", {}).get(k))
        raise BuildError(f"{_where(Path(builddir), 'config_params')} differs from config '{cfg.name}' of this spec "
                         f"({', '.join(diff[:4])}): compile the model again")
    return cfg


def file_array(builddir: str | Path, manifest: Mapping[str, Any], name: str) -> np.ndarray:
    """A verified ``.npy`` file of the build (read without pickles)."""
    path = Path(builddir) / name
    if name not in manifest.get("sha256", {}):
        raise BuildError(f"{printable(path)}: not a file of the build")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise BuildError(f"{printable(path)}: not a readable .npy array ({printable(exc)})") from None


def _region_index(region: Mapping[str, Any], mem_bytes: int, what: str) -> np.ndarray:
    try:
        n, size = (int(x) for x in region["shape"])
        stride, addr = int(region.get("stride", size)), int(region["addr"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BuildError(f"{MANIFEST}: field '{what}' is malformed ({printable(exc)})") from None
    if n < 0 or size < 0 or stride < size or addr < 0 or (n and addr + (n - 1) * stride + size > mem_bytes):
        raise BuildError(f"{MANIFEST}: field '{what}' ({n} x {size} bytes at {addr:#x}, stride {stride}) lies outside "
                         f"the {mem_bytes}-byte memory")
    return addr + np.arange(n)[:, None] * stride + np.arange(size)[None, :]


def read_tensor(region: Mapping[str, Any], mem: np.ndarray, what: str = "region") -> np.ndarray:
    """A manifest region (``input`` or ``output``) as int8 [n, h*w*ch] (per-image padding dropped)."""
    return mem[_region_index(region, int(mem.size), what)].view(np.int8).copy()


def read_output(manifest: Mapping[str, Any], mem: np.ndarray) -> np.ndarray:
    """The output region: int8 [n, h*w*ch] (an MLP's [n, m]); ``.reshape(n, *output.tensor)`` for [n, h, w, ch]."""
    return read_tensor(manifest["output"], mem, "output")


STAMP_ALIGN = 128  # stamp records start at multiples of the widest bus word (1024 bits), whatever the config


def stamps_entry(addr: int, labels: list[str]) -> dict[str, Any]:
    """The manifest's ``stamps`` object: ``len(labels)`` stamp records from ``addr`` on, ``record_stride``
    bytes apart (``record_bytes`` rounded up to STAMP_ALIGN: every record is bus-word aligned at every bus
    width), each the spec's performance counters (docs/isa.md, "Performance counters") in ``counters``
    order, one ``cycles_bits`` word each, ``record_bytes`` in all."""
    spec = load_spec()
    return {"addr": int(addr), "labels": list(labels), "counters": [c.name for c in spec.perf_counters],
            "record_bytes": spec.perf_bytes, "record_stride": -(-spec.perf_bytes // STAMP_ALIGN) * STAMP_ALIGN}


def stamp_addr(stamps: Mapping[str, Any], i: int) -> int:
    """The byte address of stamp record ``i`` (label ``i``) of a ``stamps`` object."""
    return int(stamps["addr"]) + i * int(stamps["record_stride"])


def _stamps_region(s: Mapping[str, Any]) -> dict[str, Any]:
    return {"shape": [len(s["labels"]), int(s["record_bytes"])], "stride": int(s["record_stride"]),
            "addr": s["addr"]}


def read_perf(manifest: Mapping[str, Any], mem: np.ndarray) -> dict[str, list[int]]:
    """The stamp records (``stamps`` region) as one list per performance counter (``cycles``,
    ``compute_cycles``, ``rd_bytes``, ``wr_bytes``, in the spec's order), one value per label."""
    s = manifest["stamps"]
    idx = _region_index(_stamps_region(s), int(mem.size), "stamps")
    nb = int(s["record_bytes"]) // len(s["counters"])
    words = [[int.from_bytes(mem[row[nb * i : nb * i + nb]].tobytes(), "little") for row in idx]
             for i in range(len(s["counters"]))]
    return dict(zip(s["counters"], words, strict=True))


def op_deltas(manifest: Mapping[str, Any], values: Sequence[int], only: int | None = None) -> list[int]:
    """Per op (``layers``), a counter's growth over the op: the difference of the stamp records around it
    (``values``: one per label, :func:`read_perf`), summed over the program's ``passes`` (a build with
    ``--batch`` runs the ops once per pass of B inputs; label 1 + p*L + i ends op i of pass p; with
    ``--batch-from`` the stamps' ``ops`` name the pass and op each label ends), or of pass ``only`` alone."""
    nl = len(manifest["layers"])
    passes = int(manifest.get("passes", 1))
    if only is not None and not 0 <= only < passes:
        raise BuildError(f"pass {only} of a build of {passes} passes")
    which = manifest.get("stamps", {}).get("ops")
    if which is not None:  # label j + 1 ends op which[j][1] of pass which[j][0]
        if len(values) != len(which) + 1:
            raise BuildError(f"{len(values)} stamp values for {len(which)} stamped ops (expected {len(which) + 1})")
        out = [0] * nl
        for j, (p, i) in enumerate(which):
            if only is None or p == only:
                out[i] += int(values[j + 1]) - int(values[j])
        return out
    if len(values) != passes * nl + 1:
        raise BuildError(f"{len(values)} stamp values for {passes} passes of {nl} ops (expected {passes * nl + 1})")
    ps = range(passes) if only is None else (only,)
    return [sum(int(values[1 + p * nl + i]) - int(values[p * nl + i]) for p in ps) for i in range(nl)]


def read_stamps(manifest: Mapping[str, Any], mem: np.ndarray) -> list[int]:
    """The ``cycles`` counter of every stamp record (``stamps`` region): one per label."""
    return read_perf(manifest, mem)["cycles"]


def check_expected(builddir: str | Path, manifest: Mapping[str, Any], res: sim.Result) -> list[str]:
    """What differs between the golden simulator's run ``res`` of the build's image and the expectations the
    compiler wrote into the build (error code and PC, retired instructions, ``expected_output.npy``):
    empty when they agree."""
    exp = manifest.get("expected")
    if not isinstance(exp, dict):
        raise BuildError(f"{_where(Path(builddir), 'expected')}: missing or not an object")
    errors: list[str] = []
    for key, got in (("sim_err_code", res.err_code), ("sim_insns", res.insn_count), ("sim_err_pc", res.err_pc)):
        want = exp.get(key)
        if not isinstance(want, int) or isinstance(want, bool):
            raise BuildError(f"{_where(Path(builddir), 'expected.' + key)}: missing or not an integer")
        if got != want:
            errors.append(f"golden simulator: {key} = {got:#x}, the build expects {want:#x}")
    name = exp.get("output")
    if name is not None:
        want_out = file_array(builddir, manifest, str(name))
        got_out = read_output(manifest, res.mem) if "output" in manifest else None
        if got_out is None or want_out.shape != got_out.shape or want_out.dtype != got_out.dtype:
            errors.append(f"golden simulator's output {None if got_out is None else list(got_out.shape)} does not "
                          f"fit {name} {list(want_out.shape)} {want_out.dtype}")
        elif not np.array_equal(want_out, got_out):
            n = int((want_out != got_out).sum())
            errors.append(f"golden simulator's output differs from {name} in {n} of {want_out.size} bytes")
    elif "output" in manifest and res.done:
        errors.append(f"{MANIFEST} has an output region but field 'expected.output' names no expected outputs")
    return errors


def _files_of(builddir: Path) -> set[str]:
    return {p.name for p in builddir.iterdir()}


def check_target(out: str | Path) -> None:
    """Raise :class:`BuildError` unless ``out`` may receive a build: a new path (below directories or nothing),
    an empty directory, or an earlier build (of this or an older format version) whose seal verifies and that
    holds nothing but its own files."""
    path = Path(out)
    if path.name in ("", ".", ".."):
        raise BuildError(f"-o {printable(out)}: name a build directory (e.g. build/<model>), not {printable(out)!r}")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise BuildError(f"-o {printable(out)}: {printable(parent)} is not a directory")
            break
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_dir():
        raise BuildError(f"-o {printable(out)}: exists and is not a directory; refusing to replace it")
    names = _files_of(path)
    if not names:
        return
    try:
        manifest = read(path, older=True)
    except BuildError as exc:
        reason = str(exc)
        for prefix in (f"{printable(path)}/", f"{printable(path)}: "):
            reason = reason.removeprefix(prefix)
        raise BuildError(f"-o {printable(out)}: exists and is not an intact pqcompile build ({reason}); refusing to "
                         "replace it: remove it yourself or choose another -o") from None
    extra = sorted(names - set(manifest["sha256"]) - {MANIFEST})
    if extra:
        raise BuildError(f"-o {printable(out)}: the earlier build holds files pqcompile did not write "
                         f"({', '.join(printable(e) for e in extra[:5])}); refusing to replace it: move them away or "
                         "choose another -o")


def write(outdir: str | Path, manifest: dict[str, Any], files: Mapping[str, Callable[[Path], None]]) -> dict[str, Any]:
    """Write a build directory: ``files`` maps each file name to a function that writes that file at the path
    it is given; the manifest is sealed (:func:`seal`) and written last. Atomic: the directory appears (or
    replaces an earlier build, :func:`check_target`) only when complete; on any error nothing is left, and
    directories created for it are removed again. Returns the sealed manifest."""
    outdir = Path(outdir)
    for name in files:
        if not _NAME_RE.match(name) or name == MANIFEST:
            raise ValueError(f"bad build file name {name!r}")
    check_target(outdir)
    created: list[Path] = []
    for parent in reversed(outdir.parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.tmp-", dir=outdir.parent))
    try:
        tmp.chmod(0o777 & ~_umask())
        manifest = {"format": FORMAT, "version": VERSION, **manifest, "sha256": {name: "" for name in files}}
        for name, writer in files.items():
            writer(tmp / name)
        seal(manifest, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, allow_nan=False) + "\n", encoding="ascii")
        _replace(outdir, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(created):
            try:
                d.rmdir()
            except OSError:
                break
        raise
    return manifest


def _replace(outdir: Path, tmp: Path) -> None:
    """Move the complete build ``tmp`` to ``outdir``; an earlier build there (checked again now) is moved
    aside first and then removed file by file (only the files its manifest names), never recursively."""
    if not (outdir.exists() or outdir.is_symlink()):
        tmp.rename(outdir)
        return
    check_target(outdir)
    names = _files_of(outdir)
    aside = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.old-", dir=outdir.parent))
    old = aside / "build"
    outdir.rename(old)
    try:
        tmp.rename(outdir)
    except BaseException:
        old.rename(outdir)
        aside.rmdir()
        raise
    for name in names:
        (old / name).unlink()
    old.rmdir()
    aside.rmdir()
