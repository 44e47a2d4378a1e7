"""Input and output files of the command line: clear errors, atomic writes.

* `check_keras_file(path)` tells a missing, empty, truncated and non-zip
  `.keras` file apart (Keras says "File not found" for all of them);
* `load_keras_file(path)` loads it with `safe_mode=True` (no code from the
  file runs) and names the file in every error;
* `atomic_write(path, data)` writes a temporary file in the same folder and
  renames it over `path` (`os.replace`): a reader never sees half a file,
  and a failed write leaves the old file as it was;
* `check_output(path, inputs)` refuses an output that is one of the inputs.
"""

from __future__ import annotations

import os
import tempfile
import zipfile

__all__ = ["InputFileError", "check_keras_file", "load_keras_file", "atomic_write", "check_output"]


class InputFileError(ValueError):
    """An input file is missing, empty, truncated or not what it should be.

    The command line exits with status 2 on it.
    """


def check_keras_file(path):
    """Checks that `path` looks like a loadable Keras file, with a clear error.

    `.keras` files must be complete zip archives holding `config.json`;
    `.h5`/`.hdf5` files must start with the HDF5 signature.

    Args:
        path: the model file.

    Returns:
        The path as a string.

    Raises:
        InputFileError: missing, a directory, empty, truncated, not a zip
            archive, or a zip without `config.json`; the message names the
            file.

    Example:
    >>> check_keras_file("model.keras")
    'model.keras'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"no such model file: {path!r}")
    if os.path.isdir(path):
        raise InputFileError(f"{path!r} is a directory, expected a .keras file")
    size = os.path.getsize(path)
    if size == 0:
        raise InputFileError(f"{path!r} is empty (0 bytes): it is not a Keras model")
    with open(path, "rb") as f:
        head = f.read(8)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".h5", ".hdf5"):
        if head != b"\x89HDF\r\n\x1a\n":
            raise InputFileError(f"{path!r} is not an HDF5 file (no HDF5 signature)")
        return path
    if head[:2] != b"PK":
        raise InputFileError(
            f"{path!r} is not a .keras file: it is not a zip archive ({size:,} bytes)"
        )
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            bad = z.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
        raise InputFileError(
            f"{path!r} is a truncated or corrupt .keras file ({size:,} bytes): {e}"
        ) from None
    except Exception as e:  # zlib.error, NotImplementedError (compression), ...
        raise InputFileError(
            f"{path!r} is a corrupt .keras file ({size:,} bytes): {type(e).__name__}: {e}"
        ) from None
    if bad is not None:
        raise InputFileError(f"{path!r} is a corrupt .keras file: member {bad!r} fails its CRC")
    if "config.json" not in names:
        raise InputFileError(f"{path!r} is a zip archive but not a Keras model (no config.json)")
    return path


def load_keras_file(path):
    """Loads a Keras model file with `safe_mode=True`, after `check_keras_file`.

    Args:
        path: the `.keras` (or `.h5`) file.

    Returns:
        The `keras.Model` (not compiled).

    Raises:
        InputFileError: the file is not loadable; the message names it.

    Example:
    >>> model = load_keras_file("pruned.keras")
    """
    path = check_keras_file(path)
    import keras

    try:  # registers kprune's serializable classes (PruneWrapper, ...)
        import kprune

        kprune.import_api()  # inside the `kprune` command the API is imported late
    except ImportError:
        pass
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as e:
        text = str(e).strip().splitlines()
        first = (text[0] if text else type(e).__name__)[:300]
        raise InputFileError(f"cannot load {path!r} (safe_mode=True): {first}") from None
    if not isinstance(model, keras.Model):
        raise InputFileError(f"{path!r} holds a {type(model).__name__}, not a keras.Model")
    return model


def check_output(path, inputs):
    """Refuses an output path that is (or resolves to) one of the input files.

    Args:
        path: the output file.
        inputs: the input file paths.

    Raises:
        InputFileError: `path` is a directory or the same file as an input.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputFileError(f"-o {path!r} is a directory, expected a file path")
    for src in inputs:
        if src is None:
            continue
        src = os.fspath(src)
        same = os.path.realpath(src) == os.path.realpath(path)
        if not same and os.path.exists(src) and os.path.exists(path):
            try:
                same = os.path.samefile(src, path)
            except OSError:
                same = False
        if same:
            raise InputFileError(
                f"-o {path!r} is the input file {src!r}: writing it would destroy the "
                "input; choose another output path"
            )


def atomic_write(path, data):
    """Writes `data` to `path` atomically (temporary file + `os.replace`).

    Parent folders are created. On any error the temporary file is removed
    and an existing `path` is left as it was.

    Args:
        path: destination.
        data: bytes.

    Returns:
        The path as a string.

    Example:
    >>> atomic_write("model.tflite", tflite_bytes)
    'model.tflite'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(data))
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(path):
            try:
                os.chmod(tmp, os.stat(path).st_mode & 0o7777)
            except OSError:
                pass
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
